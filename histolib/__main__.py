"""``python -m histolib`` runs the ``histolib`` command."""

from histolib.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
