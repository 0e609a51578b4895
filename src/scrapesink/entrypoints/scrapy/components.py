"""The spider middleware that notes each item's origin, and the add-on that enables both parts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

from itemadapter import is_item
from scrapy import signals
from scrapy.exceptions import NotConfigured

from scrapesink.entrypoints.scrapy.items import Origins, origins_of

PIPELINE = "scrapesink.scrapy.ScrapesinkPipeline"
SPIDER_MIDDLEWARE = "scrapesink.scrapy.ScrapesinkSpiderMiddleware"


class ScrapesinkSpiderMiddleware:
    """Notes, for each item a response yields, the fingerprint of its request and the item's
    place among that response's items: a raw event's ``source_id`` (``<fingerprint>#<n>``), the
    same on every crawl of the same page."""

    def __init__(self, crawler: Any) -> None:
        if not crawler.settings.getbool("SCRAPESINK_ENABLED", True):
            raise NotConfigured("SCRAPESINK_ENABLED is off")
        self.crawler = crawler
        self.origins: Origins = origins_of(crawler)
        self.origins.active = True
        # an item an earlier pipeline drops, or one that fails, never reaches scrapesink's
        crawler.signals.connect(self._forget, signal=signals.item_dropped)
        crawler.signals.connect(self._forget, signal=signals.item_error)

    def _forget(self, item: Any, **kwargs: Any) -> None:
        self.origins.take(item)

    @classmethod
    def from_crawler(cls, crawler: Any) -> ScrapesinkSpiderMiddleware:
        return cls(crawler)

    def _fingerprint(self, response: Any) -> str | None:
        request = getattr(response, "request", None)
        if request is None:
            return None
        return str(self.crawler.request_fingerprinter.fingerprint(request).hex())

    def process_spider_output(
        self, response: Any, result: Iterable[Any], spider: Any = None
    ) -> Iterator[Any]:
        fingerprint, n = self._fingerprint(response), 0
        for obj in result:
            if fingerprint is not None and is_item(obj):
                self.origins.note(obj, f"{fingerprint}#{n}")
                n += 1
            yield obj

    async def process_spider_output_async(
        self, response: Any, result: AsyncIterator[Any], spider: Any = None
    ) -> AsyncIterator[Any]:
        fingerprint, n = self._fingerprint(response), 0
        async for obj in result:
            if fingerprint is not None and is_item(obj):
                self.origins.note(obj, f"{fingerprint}#{n}")
                n += 1
            yield obj


class ScrapesinkAddon:
    """``ADDONS = {"scrapesink.scrapy.ScrapesinkAddon": 0}``: the pipeline (at
    ``SCRAPESINK_PIPELINE_ORDER``, default 800) and the spider middleware, in one line."""

    def update_settings(self, settings: Any) -> None:
        order = settings.getint("SCRAPESINK_PIPELINE_ORDER", 800)
        settings["ITEM_PIPELINES"][PIPELINE] = order
        settings["SPIDER_MIDDLEWARES"][SPIDER_MIDDLEWARE] = 10
