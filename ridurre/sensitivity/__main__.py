"""``python -m ridurre.sensitivity --model M --data D ...``: the ``ridurre sensitivity`` command."""

if __name__ == "__main__":
    import sys

    from ridurre.app.sensitivity_cli import main

    sys.exit(main())
