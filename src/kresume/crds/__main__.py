"""``python -m kresume.crds [--write | --check] [DIR]``: print, regenerate or check the CRD YAML.

Without flags the CRDs are printed as one multi-document YAML stream (``| kubectl apply -f -``).
``--write`` rewrites the files (default DIR: the package folder); ``--check`` exits 1 naming
stale files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kresume import crds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kresume.crds", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite the YAML files in DIR")
    mode.add_argument("--check", action="store_true", help="exit 1 if a file in DIR is stale")
    parser.add_argument("dir", nargs="?", type=Path, default=crds.HERE, help="folder (default: the package)")
    args = parser.parse_args(argv)
    if args.write:
        for path in crds.write(args.dir):
            print(path)
        return 0
    if args.check:
        bad = crds.stale(args.dir)
        for name in bad:
            print(f"stale: {args.dir / name} (run python -m kresume.crds --write)", file=sys.stderr)
        return 1 if bad else 0
    sys.stdout.write("---\n".join(crds.files().values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
