"""A process delivering the journals another process closes (``deliver="journal"``).

    python -m scrapesink.entrypoints.deliverer FINISH_SECONDS

Started by a writer that must not spend its own time on delivery (the Scrapy pipeline), with
the settings in its environment (``SCRAPESINK_*``, ``PG_*``: never on the command line, where
``ps`` shows passwords to every user). It replays every closed
journal of the data directory in passes (``application.follow``) and writes one JSON line per
pass on stdout (what each store did so far, what is left). When its stdin closes (the writer
finished, or died) it makes its last passes, for at most FINISH_SECONDS, and exits. Ctrl-C is
ignored (the terminal sends it to the writer's whole process group: the writer decides); kill
it any time: replay is exactly once, the next start or ``scrapesink replay`` goes on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import sys
import threading
import time

from scrapesink.application.follow import follow
from scrapesink.application.replay import ReplayResult
from scrapesink.bootstrap import bootstrap
from scrapesink.config import get_settings
from scrapesink.errors import ScrapesinkError

PASS_SECONDS = 0.5
log = logging.getLogger("scrapesink.deliverer")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    finish_seconds = float(args[0]) if args else 60.0
    try:
        app = bootstrap(get_settings(), offline_ok=True)
    except ScrapesinkError as exc:
        _say({"error": exc.message})
        return 2
    finish = threading.Event()
    finishing_at: list[float] = []

    def watch_stdin() -> None:
        while sys.stdin.buffer.read(65536):
            pass
        finishing_at.append(time.monotonic() + finish_seconds)
        finish.set()

    threading.Thread(target=watch_stdin, name="scrapesink-stdin", daemon=True).start()
    try:
        app.repair()
        first = [True]

        def replay() -> ReplayResult:
            # partitions premade on the first pass only (a pass every half second); a day
            # that comes later gets its partition from the event store on demand
            try:
                return app.replay(prepare=first.pop() if first else False)
            except (ScrapesinkError, OSError) as exc:
                # a pass that fails leaves the journals as they were: the next one tries again
                message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
                log.warning("delivery pass failed: %s", message)
                return ReplayResult()

        follow(
            replay,
            finish,
            interval=PASS_SECONDS,
            deadline=lambda: finishing_at[0] if finishing_at else None,
            on_pass=lambda progress: _say(progress.as_dict()),
        )
    except ScrapesinkError as exc:
        _say({"error": exc.message})
        return 1
    finally:
        app.close()
    return 0


def _say(message: dict[str, object]) -> None:
    with contextlib.suppress(BrokenPipeError):  # the writer is gone: the passes still count
        print(json.dumps(message), flush=True)


if __name__ == "__main__":
    sys.exit(main())
