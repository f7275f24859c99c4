"""``python -m kresume.dev.node``: the same as ``kresume dev node``."""

from kresume.dev.node.cli import main

main()
