"""A spider for the example movie site: ``Movie`` items (with their ``Actor`` items) for the
bundled ``movies`` model, and one raw event per listing page."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import scrapy


class Actor(scrapy.Item):
    name = scrapy.Field()
    role = scrapy.Field()
    billing_order = scrapy.Field()


class Movie(scrapy.Item):
    url = scrapy.Field()
    title = scrapy.Field()
    year = scrapy.Field()
    rating = scrapy.Field()
    genres = scrapy.Field()
    synopsis = scrapy.Field()
    actors = scrapy.Field()


class MoviesSpider(scrapy.Spider):
    name = "movies"
    custom_settings: ClassVar[dict[str, Any]] = {
        # Movie items are records of the movies model; everything else (the listing pages'
        # dicts) is a raw event of the source "movies" (the spider's name).
        "SCRAPESINK_ITEMS": {Movie: "movies"},
    }

    def __init__(self, base_url: str = "http://127.0.0.1:8000", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.start_urls = [base_url.rstrip("/") + "/index.html"]

    def parse(self, response: Any) -> Iterator[Any]:
        movie_links = response.css("a.movie::attr(href)").getall()
        yield {
            "url": response.url,
            "page": int(response.css("span.number::text").get("0")),
            "movies": [response.urljoin(link) for link in movie_links],
        }
        yield from response.follow_all(movie_links, callback=self.parse_movie)
        yield from response.follow_all(css="nav a.page", callback=self.parse)

    def parse_movie(self, response: Any) -> Iterator[Any]:
        year = response.css("span.year::text").get("").strip()
        actors = [
            Actor(
                name=row.css("td.actor a::text").get(),
                role=row.css("td.role::text").get(),
                billing_order=position,
            )
            for position, row in enumerate(response.css("table.cast tr"), start=1)
        ]
        yield Movie(
            url=response.url,
            title=response.css("h1.title::text").get(),
            year=int(year) if year.isdigit() else year,  # "MCMXCV": the model refuses it
            rating=float(response.css("span.rating::text").get("0")),
            genres=response.css("ul.genres li::text").getall(),
            synopsis=response.css("p.synopsis::text").get(),
            actors=actors,
        )
