"""Help that reads like psql's or git's: ``FILE``, ``MODEL``, ``N`` — not Python types.

typer 0.29 prints each parameter's Python type as its metavar (``<bool>`` on every flag, even
``--help``; ``<list[Path]>``; ``<int range>``; an argument as ``{model}``) and has no setting for
it: the three methods that render them are replaced here, once, when the CLI is built. Written
by hand because no option of typer or click does this; an explicit ``metavar=`` still wins.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, get_args

from typer import core


def _argument_name(self: core.TyperArgument) -> str:
    return self.metavar if self.metavar is not None else (self.name or "").upper()


def _argument_usage(self: core.TyperArgument) -> str:
    name = _argument_name(self) + ("..." if self.nargs != 1 else "")
    return name if self.required else f"[{name}]"


def _option_metavar(self: core.TyperOption, ctx: Any) -> str | None:
    if self.is_flag or self.count:
        return None  # a flag takes no value
    if self.metavar is not None:
        return self.metavar
    return value_name(self)


def value_name(param: Any) -> str:
    """FILE, DIR, N, NUMBER, TIME, a|b|c, or the parameter's own name in capitals (--sort SORT)."""
    desc = param.type_descriptor
    if desc.choices is not None:
        return "|".join(str(getattr(c, "value", c)) for c in desc.choices)
    annotation = desc.annotation
    if desc.is_list:
        (annotation,) = get_args(annotation) or (str,)
    info = desc.parameter_info
    if desc.is_path or annotation is Path:
        named = max(param.opts, key=len).lstrip("-")
        if (info.dir_okay and not info.file_okay) or named.endswith(("dir", "out")):
            return "DIR"
        return "FILE"
    if annotation is int:
        return "N"
    if annotation is float:
        return "NUMBER"
    if annotation is datetime:
        return "TIME"
    longest: str = max(param.opts, key=len).lstrip("-")
    return longest.upper().replace("-", "_")


def _argument_type(self: core.TyperArgument, ctx: Any) -> str | None:
    name = _argument_name(self)
    shown = value_name(self)
    return None if shown == name.removesuffix("...") or shown == name else shown


def install() -> None:
    core.TyperArgument.display_name_raw = property(_argument_name)  # type: ignore[method-assign,assignment]
    core.TyperArgument._usage_display_name = _argument_usage  # type: ignore[method-assign]
    core.TyperOption.display_type_rich = _option_metavar  # type: ignore[method-assign]
    core.TyperArgument.display_type_rich = _argument_type  # type: ignore[method-assign,assignment]
