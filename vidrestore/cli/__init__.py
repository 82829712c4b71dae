"""The ``vidrestore`` command line: ``parser`` (the parser tree and the configuration its flags
give), ``commands`` (what each command does), ``main`` (errors to one line and an exit code).

Commands import what they run when they run it, so ``vidrestore --help`` and ``models list``
answer without loading torch; nothing imports the command line back.
"""

from vidrestore.cli.main import main

__all__ = ["main"]
