"""``python -m modalab``: the same command line as the ``modalab`` script (cli.py)."""

from modalab.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
