"""``python -m kresume.operator`` = ``kresume operator``."""

from kresume.operator.cli import main

if __name__ == "__main__":
    main()
