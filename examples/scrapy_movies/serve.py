"""Serve a directory over HTTP on loopback: ``python serve.py DIR [--port N]``.

The standard library's server with what a crawl needs: HTTP/1.1 keep-alive (Scrapy reuses its
connections), a listen backlog of 1024 (``http.server``'s 5 drops connections once a crawler
opens more than a few at once, and each retried SYN costs a second), and no log line per request.
It prints ``serving http://127.0.0.1:PORT`` once it listens (port 0: a free one).
"""

from __future__ import annotations

import argparse
import contextlib
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class Handler(SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass


class Server(ThreadingHTTPServer):
    request_queue_size = 1024
    daemon_threads = True


def start(root: Path, port: int = 0) -> tuple[Server, str]:
    """Serve ``root`` in a background thread; returns the server and its base URL."""
    server = Server(("127.0.0.1", port), partial(Handler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server = Server(("127.0.0.1", args.port), partial(Handler, directory=str(args.directory)))
    print(f"serving http://127.0.0.1:{server.server_address[1]}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
