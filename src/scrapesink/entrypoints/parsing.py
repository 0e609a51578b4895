"""Text forms of model keys and filters, as the CLI and the REST API take them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from scrapesink.application.ports import FILTER_OPS, Filter
from scrapesink.errors import InputError


def parse_key(text: str) -> Any:
    """A natural key: a JSON object for composite keys, else the bare value."""
    if text.startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"the key is not valid JSON: {exc.msg}") from None
    return text


def parse_filters(where: Sequence[str]) -> list[Filter]:
    """``FIELD OP VALUE`` each (``quality_score>=0.8``, ``tags~["ai"]``); VALUE is JSON, or
    bare text."""
    filters = []
    for text in where:
        # the longest operator first: ">=" before ">"
        for op in sorted(FILTER_OPS, key=len, reverse=True):
            field, found, value = text.partition(op)
            if found and field and field.strip().isidentifier():
                try:
                    parsed = json.loads(value)
                except json.JSONDecodeError:
                    parsed = value  # bare text
                filters.append(Filter(field.strip(), op, parsed))
                break
        else:
            raise InputError(
                f"bad filter {text!r}: use FIELD OP VALUE with OP one of {' '.join(FILTER_OPS)}"
            )
    return filters
