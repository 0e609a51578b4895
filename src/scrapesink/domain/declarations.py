"""Reading model declarations: the bundled ones, files, decoded JSON (see ``models.py`` for
the shape); every problem is reported at once, with its path."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from scrapesink.domain.model_checks import Checker
from scrapesink.domain.models import BUNDLED, Declaration
from scrapesink.errors import DeclarationError


def load_declaration(path: Path) -> Declaration:
    """Read and check a declaration file; every problem is reported, prefixed by the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DeclarationError([f"{path}: no such file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DeclarationError([f"{path}: unreadable: {exc}"]) from None
    except json.JSONDecodeError as exc:
        raise DeclarationError(
            [f"{path}: malformed JSON at line {exc.lineno}: {exc.msg}"]
        ) from None
    try:
        return parse_declaration(data)
    except DeclarationError as exc:
        raise DeclarationError([f"{path}: {problem}" for problem in exc.problems]) from None


def bundled(name: str) -> Declaration:
    """One of the declarations shipped with scrapesink (``movies``, ``workflows``)."""
    if name not in BUNDLED:
        raise DeclarationError([f"no bundled declaration {name!r} (bundled: {', '.join(BUNDLED)})"])
    text = (resources.files("scrapesink") / "models" / f"{name}.json").read_text(encoding="utf-8")
    return parse_declaration(json.loads(text))


def load_models(paths: list[Path] | tuple[Path, ...] = ()) -> Declaration:
    """The bundled declarations merged with the given files (a name declared twice is an error)."""
    merged = Declaration()
    for name in BUNDLED:
        merged = merged.merged(bundled(name))
    for path in paths:
        merged = merged.merged(load_declaration(path))
    return merged


def parse_declaration(data: Any) -> Declaration:
    """Check a decoded declaration; raise :class:`DeclarationError` listing every problem."""
    checker = Checker()
    declaration = checker.declaration(data)
    if checker.problems:
        raise DeclarationError(checker.problems)
    return declaration
