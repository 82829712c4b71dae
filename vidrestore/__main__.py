"""``python -m vidrestore``: the same as the ``vidrestore`` command."""

import sys

from vidrestore.cli import main

sys.exit(main())
