"""Health checks: what `scrapesink health` and monitoring ask before trusting an installation."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class Health:
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [check.as_dict() for check in self.checks]}


class GroupLike(Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def group(self) -> str: ...
    @property
    def lag(self) -> int | None: ...
    @property
    def pending(self) -> int: ...
    @property
    def consumers(self) -> int: ...
    @property
    def idle_ms(self) -> int | None: ...


def group_checks(groups: Iterable[GroupLike], idle_limit_seconds: float) -> list[Check]:
    """One check per consumer group of the shared journal: it fails when the group has entries
    to deliver (lag or pending) and no consumer did anything for ``idle_limit_seconds``."""
    checks = []
    for g in groups:
        behind = (g.lag or 0) + g.pending
        idle = None if g.idle_ms is None else g.idle_ms / 1000
        stalled = behind > 0 and (g.consumers == 0 or idle is None or idle > idle_limit_seconds)
        detail = f"lag {g.lag if g.lag is not None else '?'}, {g.pending} pending entries, "
        detail += f"{g.consumers} consumer(s)"
        if idle is not None:
            detail += f", idle {idle:.0f} s"
        if stalled and g.consumers and idle is not None:
            detail += (
                f": its workers did nothing for {idle:.0f} s (stopped or stuck? a paused CSV"
                " worker holds the CSV files' lock; a worker that died is replaced by starting"
                " another)"
            )
        elif stalled:
            detail += f": no worker delivers (start `scrapesink worker --sink {g.group}`)"
        checks.append(Check(f"group {g.group} {g.kind}", not stalled, detail))
    return checks
