"""``python -m kresume.devtools.node``: the same as ``kresume dev node``."""

from kresume.devtools.node.cli import main

main()
