"""``python -m kresume.dev.demo``: the same as ``kresume demo``."""

from kresume.dev.demo.cli import main

main()
