"""``python -m kresume.devtools.demo``: the same as ``kresume demo``."""

from kresume.devtools.demo.cli import main

main()
