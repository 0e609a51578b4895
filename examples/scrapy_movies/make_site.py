"""Writes the example movie site: listing pages with pagination (each links to the next ten
pages), movie pages with cast lists.

``python make_site.py DIR [--movies N]``. The site is deterministic (the same N gives the same
bytes), so ``site/`` beside this file is its output for the default size, and tests and the
benchmark make bigger ones. Movie 7 is malformed on purpose: its year reads ``MCMXCV``, which
the ``movies`` model refuses (an integer field), so a crawl shows how a rejected item is
reported while the rest goes on.
"""

from __future__ import annotations

import argparse
import html
import random
from pathlib import Path

PER_PAGE = 10
PAGE_LINKS = 10  # a listing page links to the next ten
DEFAULT_MOVIES = 60
MALFORMED = 7  # the movie whose year is not a number
WORDS = [
    *("Heat", "Night", "River", "Glass", "Empire", "Silent", "Paper", "Moon", "Iron", "Garden"),
    *("Last", "Summer", "Winter", "Echo", "Broken", "Golden", "Hidden", "Lost", "City", "Storm"),
    *("Shadow", "Light", "Dance", "Ocean", "Fire", "Road", "Stone", "Wild"),
]
FIRST = ["Al", "Robert", "Val", "Ashley", "Diane", "Amy", "Jon", "Tom", "Meryl", "Viola"]
# a no-break space inside a name, and names beyond ASCII
LAST = ["Pacino", "De\u00a0Niro", "Kilmer", "Judd", "Venora", "Brenneman", "Voight", "Żuławski"]
GENRES = ["Crime", "Drama", "Thriller", "Comedy", "Romance", "Sci-Fi", "Documentary"]
STYLE = "body{font-family:sans-serif;max-width:40em;margin:auto}"


def page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n"
        f"<body>\n{body}\n</body></html>\n"
    )


def movies(count: int) -> list[dict[str, object]]:
    rng = random.Random(1995)
    actors = [f"{f} {surname}" for f in FIRST for surname in LAST]  # a shared pool
    made = []
    for n in range(1, count + 1):
        title = f"{rng.choice(WORDS)} {rng.choice(WORDS)}"
        if n % 13 == 0:
            title += ' & "Friends", Part II'  # quotes, commas and an ampersand
        cast = rng.sample(actors, rng.randint(2, 6))
        made.append(
            {
                "n": n,
                "slug": f"movie-{n:05d}",
                "title": f"{title} ({n})",
                "year": "MCMXCV" if n == MALFORMED else str(1950 + n % 75),
                "rating": f"{rng.uniform(1, 10):.1f}",
                "genres": rng.sample(GENRES, rng.randint(1, 3)),
                "synopsis": f"A story of {title.lower()}.\nIt spans two lines.",
                "cast": [(name, f"Role {i + 1}") for i, name in enumerate(cast)],
            }
        )
    return made


def movie_page(movie: dict[str, object]) -> str:
    cast = "\n".join(
        f'<tr><td class="actor"><a href="/actors/{html.escape(name.replace(" ", "-"))}.html">'
        f'{html.escape(name)}</a></td><td class="role">{html.escape(role)}</td></tr>'
        for name, role in movie["cast"]  # type: ignore[attr-defined]
    )
    genres = "".join(f"<li>{html.escape(g)}</li>" for g in movie["genres"])  # type: ignore[attr-defined]
    return page(
        str(movie["title"]),
        f'<h1 class="title">{html.escape(str(movie["title"]))}</h1>\n'
        f'<p>Year: <span class="year">{movie["year"]}</span> · '
        f'Rating: <span class="rating">{movie["rating"]}</span></p>\n'
        f'<ul class="genres">{genres}</ul>\n'
        f'<p class="synopsis">{html.escape(str(movie["synopsis"]))}</p>\n'
        f'<table class="cast">\n{cast}\n</table>\n<p><a href="/index.html">All movies</a></p>',
    )


def listing_page(number: int, pages: int, chunk: list[dict[str, object]]) -> str:
    links = "\n".join(
        f'<li><a class="movie" href="/movies/{m["slug"]}.html">'
        f"{html.escape(str(m['title']))}</a></li>"
        for m in chunk
    )
    nav = ""
    if number > 1:
        prev = "/index.html" if number == 2 else f"/page/{number - 1}.html"
        nav += f'<a rel="prev" href="{prev}">previous</a> '
    for ahead in range(number + 1, min(pages, number + PAGE_LINKS) + 1):  # "2 3 4 ... 11"
        rel = ' rel="next"' if ahead == number + 1 else ""
        nav += f'<a class="page"{rel} href="/page/{ahead}.html">{ahead}</a> '
    return page(
        f"Movies, page {number}",
        f'<h1>Movies</h1>\n<p class="page">Page <span class="number">{number}</span> of '
        f'<span class="pages">{pages}</span></p>\n<ul class="movies">\n{links}\n</ul>\n'
        f"<nav>{nav}</nav>",
    )


def write_site(root: Path, count: int = DEFAULT_MOVIES) -> int:
    """Write the site under ``root``; returns the number of pages written."""
    made = movies(count)
    pages = max(1, -(-count // PER_PAGE))
    (root / "movies").mkdir(parents=True, exist_ok=True)
    (root / "page").mkdir(exist_ok=True)
    for movie in made:
        (root / "movies" / f"{movie['slug']}.html").write_text(movie_page(movie), "utf-8")
    for number in range(1, pages + 1):
        chunk = made[(number - 1) * PER_PAGE : number * PER_PAGE]
        name = root / ("index.html" if number == 1 else f"page/{number}.html")
        name.write_text(listing_page(number, pages, chunk), "utf-8")
    return len(made) + pages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--movies", type=int, default=DEFAULT_MOVIES)
    args = parser.parse_args()
    print(f"{write_site(args.directory, args.movies)} pages written to {args.directory}")


if __name__ == "__main__":
    main()
