"""``python -m vidrestore``: the same as the ``vidrestore`` command."""

import sys

from vidrestore.cli import main

if __name__ == "__main__":  # not when a spawned worker process imports it
    sys.exit(main())
