"""The pipeline's delivery process: a child that delivers the journals the crawl closes.

The crawl's process only journals (``deliver="journal"``): delivering in it would take the GIL
and a core from Scrapy, which then crawls slower. The child (``scrapesink.entrypoints.
deliverer``) replays each closed journal in passes and reports on stdout; a reader thread keeps
its last report. It has a session of its own, so a Ctrl-C in the terminal reaches the crawl
only; closing its stdin tells it to finish. If the crawl dies, the child finishes on its own.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
from typing import Any

from scrapesink.application.outcomes import SinkReport

log = logging.getLogger("scrapesink.scrapy")


class DeliveryProcess:
    def __init__(self, environment: dict[str, str], finish_seconds: float) -> None:
        """``environment``: the settings, by their environment names (the command line would
        show a password to every user of the machine)."""
        self.progress: dict[str, Any] = {}
        self.error: str | None = None
        self.process = subprocess.Popen(
            [sys.executable, "-m", "scrapesink.entrypoints.deliverer", str(finish_seconds)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, **environment},
            start_new_session=True,
        )
        self._reader = threading.Thread(
            target=self._read, name="scrapesink-delivery-reader", daemon=True
        )
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if "error" in message:
                self.error = str(message["error"])
                log.error("scrapesink delivery: %s", self.error)
            else:
                self.progress = message

    def reports(self) -> dict[str, SinkReport]:
        """Per store, what the delivery did so far (stored, duplicates, unchanged, dead
        letters, added up; pending and its reason as of the last pass)."""
        return {
            name: SinkReport(**report)
            for name, report in dict(self.progress.get("reports", {})).items()
        }

    def finish(self, timeout: float) -> bool:
        """Tell the child to finish and wait for it at most ``timeout`` seconds (it bounds its
        own last passes by the close timeout too); False when it had to be stopped."""
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.terminate()  # what it did is committed; replay goes on later
            self.process.wait(30)
            return False
        finally:
            self._reader.join(10)
            if self.process.stdout is not None:
                self.process.stdout.close()
        return self.process.returncode == 0
