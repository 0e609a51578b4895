"""The REST API (FastAPI): ``create_app(settings)``, served by ``scrapesink serve``."""

from scrapesink.entrypoints.api.app import create_app

__all__ = ["create_app"]
