"""Scrapy integration (``pip install scrapesink[scrapy]``): see :mod:`scrapesink.scrapy`."""
