"""Scrapy integration: a crawl's items in PostgreSQL and CSV, exactly once, never blocking it.

``pip install scrapesink[scrapy]``, then in ``settings.py`` either the add-on::

    ADDONS = {"scrapesink.scrapy.ScrapesinkAddon": 0}

or the pipeline (and, for request fingerprints as raw-event ids, the spider middleware)::

    ITEM_PIPELINES = {"scrapesink.scrapy.ScrapesinkPipeline": 800}
    SPIDER_MIDDLEWARES = {"scrapesink.scrapy.ScrapesinkSpiderMiddleware": 10}

Settings are read from the crawler with the environment's names (``SCRAPESINK_DATABASE_URL``,
``SCRAPESINK_DATA_DIR``, ...), plus ``SCRAPESINK_ITEMS``, ``SCRAPESINK_JOB``,
``SCRAPESINK_DROP_REJECTED``, ``SCRAPESINK_CLOSE_TIMEOUT`` and the ``SCRAPESINK_EVENT_*`` fields
(README, "Scrapy").
"""

from scrapesink.entrypoints.scrapy.components import ScrapesinkAddon, ScrapesinkSpiderMiddleware
from scrapesink.entrypoints.scrapy.pipeline import ScrapesinkPipeline

__all__ = ["ScrapesinkAddon", "ScrapesinkPipeline", "ScrapesinkSpiderMiddleware"]
