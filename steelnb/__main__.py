"""``python -m steelnb``: the ``steelnb`` command."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
