"""``python -m kresume.sidecar`` — the same as ``kresume sidecar``."""

from kresume.sidecar.cli import main

if __name__ == "__main__":
    main()
