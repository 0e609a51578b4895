"""Help that reads like psql's or git's: ``FILE``, ``MODEL``, ``N`` — not Python types.

typer 0.29 prints each parameter's Python type as its metavar (``<bool>`` on every flag, even
``--help``; ``<list[Path]>``; ``<int range>``; an argument as ``{model}``) and has no setting for
it: the three methods that render them are replaced here, once, when the CLI is built. Written
by hand because no option of typer or click does this; an explicit ``metavar=`` still wins.
"""

from __future__ import annotations

import inspect
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


def reflow(text: str | None) -> str | None:
    """A docstring's paragraphs as flowing text: the terminal wraps them at its width (kept
    as written, a line broken at 96 columns wrapped mid-sentence on an 80-column terminal).
    List items (``- ``, ``* ``) keep their own lines."""
    if not text:
        return text
    paragraphs = []
    for block in inspect.cleandoc(text).split("\n\n"):
        lines: list[str] = []
        for line in block.splitlines():
            stripped = line.strip()
            if lines and not stripped.startswith(("- ", "* ")):
                lines[-1] += " " + stripped
            else:
                lines.append(stripped)
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


def reflow_commands(app: Any) -> None:
    """Every command's help (its docstring, unless given) reflowed, in ``app`` and below."""
    for info in app.registered_commands:
        info.help = reflow(info.help or (info.callback.__doc__ if info.callback else None))
    for group in app.registered_groups:
        typer_app = group.typer_instance
        if typer_app is not None:
            reflow_commands(typer_app)
            callback = typer_app.registered_callback
            if callback is not None and callback.callback is not None and not callback.help:
                callback.help = reflow(callback.callback.__doc__)


def install() -> None:
    core.TyperArgument.display_name_raw = property(_argument_name)  # type: ignore[method-assign,assignment]
    core.TyperArgument._usage_display_name = _argument_usage  # type: ignore[method-assign]
    core.TyperOption.display_type_rich = _option_metavar  # type: ignore[method-assign]
    core.TyperArgument.display_type_rich = _argument_type  # type: ignore[method-assign,assignment]
