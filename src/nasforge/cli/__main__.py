"""``python -m nasforge.cli``: the same as the ``nasforge`` script."""

from nasforge.cli import main

if __name__ == "__main__":
    main()
