"""``vidrestore``: parse, run the command, and turn every error into one line and its exit code.

Exit codes: 0 done; 1 unexpected failure; 2 bad usage or configuration; 3 model
weights missing or invalid; 4 input unreadable or not a video/image; 130 interrupted.
Expected errors print one line on stderr; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Sequence

from vidrestore.cli.commands import HANDLERS
from vidrestore.cli.parser import build_parser
from vidrestore.errors import VidrestoreError

__all__ = ["EXIT_INTERRUPTED", "main"]

EXIT_INTERRUPTED = 130


def _setup_logging(level: int) -> None:
    """Our log lines go to stderr as ``vidrestore: warning: ...``, one line each."""
    logger = logging.getLogger("vidrestore")
    for handler in [h for h in logger.handlers if getattr(h, "_vidrestore", False)]:
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("vidrestore: %(levelname)s: %(message)s"))
    handler._vidrestore = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    level = logging.DEBUG if debug else logging.INFO if getattr(args, "verbose", False) else logging.WARNING
    _setup_logging(level)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return HANDLERS[args.command](args)
    except VidrestoreError as exc:
        if debug:
            traceback.print_exc()
        sys.stderr.write(f"vidrestore: error: {exc}\n")
        return exc.exit_code
    except BrokenPipeError:
        # stdout's reader went away (``vidrestore models list | head``): what it read is all it wanted.
        # Point stdout at nothing so that the interpreter's own flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt as exc:
        finished = getattr(exc, "finished", [])
        done = (
            f"{len(finished)} output(s) were finished before it: {', '.join(map(str, finished))}; " if finished else ""
        )
        sys.stderr.write(f"vidrestore: interrupted; {done}nothing was written at the output path in progress\n")
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug: one line, the traceback with --debug
        if debug:
            traceback.print_exc()
        sys.stderr.write(f"vidrestore: unexpected error: {type(exc).__name__}: {exc} (run with --debug for details)\n")
        return 1
