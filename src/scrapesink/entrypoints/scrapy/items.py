"""Scrapy items as scrapesink records: which model an item is a record of, or the raw event it is.

``SCRAPESINK_ITEMS`` maps item classes to models (``{"myproject.items.Movie": "movies"}``; a
subclass maps like its class), or is a callable (or the dotted path of one) that names the model
of an item, or returns None for a raw event. Items of no mapped class are raw events:

* ``source``: the spider's name, or the item's ``SCRAPESINK_EVENT_SOURCE_FIELD``;
* ``source_id``: the item's ``SCRAPESINK_EVENT_ID_FIELD``, else the fingerprint of the request
  whose response yielded it and the item's place among that response's items
  (``<fingerprint>#<n>``, noted by :class:`~scrapesink.scrapy.ScrapesinkSpiderMiddleware`), else
  a digest of the item's content;
* ``occurred_at``: the item's ``SCRAPESINK_EVENT_TIME_FIELD``, else the time it was scraped;
* ``payload``: the whole item, in JSON's types (:func:`jsonable`).

Every kind of item ``itemadapter`` knows (dict, ``scrapy.Item``, dataclass, attrs, pydantic) is
converted to a plain dict, nested items included.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

from itemadapter import ItemAdapter, is_item

from scrapesink.errors import ConfigError, RecordError

#: where a record goes: ("events", None) or ("model", "<name>")
Target = tuple[str, str | None]
EVENTS: Target = ("events", None)
MAX_NOTED = 10_000  # origins kept for items on their way to the pipeline (in flight)


class TooDeep(RecordError):
    """An item nested deeper than Python can walk (Scrapy itself cannot print it)."""


def job_name(spider: str) -> str:
    """A job name made of a spider's name (job names are 1-128 of ``A-Za-z0-9_.:-``)."""
    name = re.sub(r"[^A-Za-z0-9_.:-]+", "-", spider).lstrip("_.:-")[:128]
    return name or "scrapy"


def load(path: str, what: str) -> Any:
    """The object a dotted path names (``myproject.items.Movie``)."""
    from scrapy.utils.misc import load_object  # Scrapy's own loader, with its messages

    try:
        return load_object(path)
    except Exception as exc:  # whatever importing the user's module raised, in one line
        raise ConfigError(f"{what}: cannot load {path!r} ({type(exc).__name__}: {exc})") from None


@dataclass
class ItemRules:
    """How items become records (see the module docstring)."""

    classes: list[tuple[type, str]] = field(default_factory=list)
    chooser: Callable[[Any], str | None] | None = None
    source_field: str | None = None
    id_field: str | None = None
    time_field: str | None = None

    @classmethod
    def from_settings(cls, get: Callable[[str], Any]) -> ItemRules:
        """Read the ``SCRAPESINK_ITEMS`` and ``SCRAPESINK_EVENT_*`` settings (``get``: a
        setting by name, None when unset). Raises ConfigError."""
        rules = cls(
            source_field=_field_name(get, "SCRAPESINK_EVENT_SOURCE_FIELD"),
            id_field=_field_name(get, "SCRAPESINK_EVENT_ID_FIELD"),
            time_field=_field_name(get, "SCRAPESINK_EVENT_TIME_FIELD"),
        )
        items = get("SCRAPESINK_ITEMS")
        if isinstance(items, str):
            items = load(items, "SCRAPESINK_ITEMS")
        if items is None:
            return rules
        if callable(items) and not isinstance(items, type):
            rules.chooser = items
            return rules
        if not isinstance(items, Mapping):
            raise ConfigError(
                "SCRAPESINK_ITEMS must map item classes to model names, or be a callable "
                f"naming an item's model; got {type(items).__name__}"
            )
        for key, model in dict(items).items():
            item_class = load(key, "SCRAPESINK_ITEMS") if isinstance(key, str) else key
            if not isinstance(item_class, type):
                raise ConfigError(f"SCRAPESINK_ITEMS: {key!r} is not a class")
            if not isinstance(model, str) or not model:
                raise ConfigError(f"SCRAPESINK_ITEMS: the model of {key!r} must be a name")
            rules.classes.append((item_class, model))
        return rules

    @property
    def models(self) -> list[str]:
        """The model names the mapping names (a callable's are known only as items come)."""
        return sorted({model for _, model in self.classes})

    def target(self, item: Any) -> Target:
        """Where ``item`` goes."""
        if self.chooser is not None:
            model = self.chooser(item)
            if model is not None and not isinstance(model, str):
                raise ConfigError(f"SCRAPESINK_ITEMS returned {model!r}, not a model name")
            return ("model", model) if model else EVENTS
        for item_class, model in self.classes:
            if isinstance(item, item_class):
                return ("model", model)
        return EVENTS

    def event(
        self, record: dict[str, Any], *, spider: str, origin: str | None, scraped_at: datetime
    ) -> dict[str, Any]:
        """The raw event of an item (``record``: the item as a plain dict)."""
        source = (record.get(self.source_field) if self.source_field else None) or spider
        if self.id_field:
            source_id = record.get(self.id_field)
            if source_id is None:
                raise RecordError(f"missing field {self.id_field}", path=self.id_field)
        else:
            source_id = origin or content_id(record)
        occurred_at: Any = scraped_at.isoformat()
        if self.time_field:
            occurred_at = record.get(self.time_field)
            if occurred_at is None:
                raise RecordError(f"missing field {self.time_field}", path=self.time_field)
            if isinstance(occurred_at, datetime | date):  # read as ISO 8601 (naive: UTC)
                occurred_at = occurred_at.isoformat()
        try:
            payload = jsonable(record)
        except RecursionError:
            raise RecordError("nested too deeply", path="payload") from None
        return {
            "source": source,
            "source_id": source_id,
            "occurred_at": occurred_at,
            "payload": payload,
        }


def _field_name(get: Callable[[str], Any], name: str) -> str | None:
    value = get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a field name, got {value!r}")
    return value


def plain(item: Any) -> dict[str, Any]:
    """The item as a plain dict, nested items converted too. Raises RecordError."""
    if not is_item(item):
        raise RecordError(f"not an item: got {type(item).__name__}")
    try:
        record = ItemAdapter(item).asdict()
    except RecursionError:
        raise TooDeep("nested too deeply to convert") from None
    return {str(k): v for k, v in record.items()}


def jsonable(value: Any, path: str = "payload") -> Any:
    """A raw event's payload in JSON's types, converting what scraped items commonly hold as
    Scrapy's JSON exporter does, but losing nothing it need not: datetimes, dates and times as
    ISO 8601, a Decimal as a number when a float holds it exactly (else its text), sets and
    tuples as lists, UTF-8 bytes as text. Anything else is left for validation to refuse with
    its path. Raises RecordError for bytes that are not UTF-8."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {k: jsonable(v, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
        return [jsonable(v, f"{path}[{i}]") for i, v in enumerate(items)]
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        number = float(value)
        return number if value.is_finite() and Decimal(repr(number)) == value else str(value)
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise RecordError("bytes that are not UTF-8 text", path=path) from None
    return value


def content_id(record: Mapping[str, Any]) -> str:
    """A stable id for an item that has none: the SHA-1 of its content as canonical JSON."""
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()


def now() -> datetime:
    return datetime.now(UTC)


class Origins:
    """What the spider middleware noted of each item (its request fingerprint and place),
    until the pipeline takes it: one per crawler, shared by the two components."""

    def __init__(self, limit: int = MAX_NOTED) -> None:
        self._noted: OrderedDict[int, tuple[Any, str]] = OrderedDict()
        self._lock = threading.Lock()
        self._limit = limit
        self.active = False  # the middleware is enabled (it says so when it is built)

    def note(self, item: Any, origin: str) -> None:
        # Keyed by id(), the item itself held so the id cannot be reused meanwhile (dicts
        # cannot be weakly referenced); bounded for items some middleware never passes on.
        with self._lock:
            self._noted[id(item)] = (item, origin)
            if len(self._noted) > self._limit:
                self._noted.popitem(last=False)

    def take(self, item: Any) -> str | None:
        with self._lock:
            noted = self._noted.pop(id(item), None)
        return noted[1] if noted is not None and noted[0] is item else None

    def __len__(self) -> int:
        return len(self._noted)


def origins_of(crawler: Any) -> Origins:
    """The crawler's :class:`Origins` (made on first use)."""
    origins = crawler.__dict__.get("_scrapesink_origins")
    if origins is None:
        origins = crawler.__dict__.setdefault("_scrapesink_origins", Origins())
    assert isinstance(origins, Origins)
    return origins
