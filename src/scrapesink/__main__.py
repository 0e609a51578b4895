"""`python -m scrapesink`."""

from scrapesink.entrypoints.cli import main

main()
