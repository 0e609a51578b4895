"""`python -m scrapesink.entrypoints.cli`."""

from scrapesink.entrypoints.cli import main

main()
