"""Crawl the example movie site into scrapesink, offline: ``python examples/scrapy_movies/run.py``.

Serves ``site/`` on local port 8765 (``--port``), crawls it with ``MoviesSpider`` through the
scrapesink add-on (embedded PostgreSQL and CSV files in ``--data-dir``, default ``./data``, unless
``SCRAPESINK_DATABASE_URL`` names a server) and prints what landed where.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default="data", help="scrapesink's data directory")
    parser.add_argument("--site", type=Path, default=HERE / "site", help="the site to serve")
    parser.add_argument(
        "--port", type=int, default=8765, help="its port (movies are keyed by URL: keep it)"
    )
    args = parser.parse_args()

    sys.path.insert(0, str(HERE))
    import serve
    from movies_spider import MoviesSpider
    from scrapy.crawler import CrawlerProcess

    server, base_url = serve.start(args.site, args.port)
    print(f"serving {args.site} at {base_url}")

    process = CrawlerProcess(
        settings={
            "ADDONS": {"scrapesink.scrapy.ScrapesinkAddon": 0},
            "SCRAPESINK_DATA_DIR": args.data_dir,
            "LOG_LEVEL": "WARNING",
            "ROBOTSTXT_OBEY": False,
        }
    )
    crawler = process.create_crawler(MoviesSpider)
    process.crawl(crawler, base_url=base_url)
    process.start()
    server.shutdown()

    stats = crawler.stats.get_stats()
    print(f"crawl finished: {stats.get('finish_reason')}")
    for key in sorted(k for k in stats if k.startswith("scrapesink/")):
        print(f"  {key}: {stats[key]}")
    print(
        f"\nCSV files: {args.data_dir}/movies.csv, actors.csv, movie_actor.csv and "
        f"{args.data_dir}/raw_events/movies/. Next: scrapesink list movies, "
        "scrapesink search movies pacino, scrapesink verify, scrapesink db shell"
    )


if __name__ == "__main__":
    main()
