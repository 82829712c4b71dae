"""The error hierarchy. Each class carries the exit code the CLI returns for it, and the kind the
HTTP API names it by (the server maps kinds to statuses in one table).

Expected errors are raised as one of these, with a message that fits on one line and
says what to do; the CLI prints that line and exits with ``exit_code``. Anything
else is a bug and exits 1 with a short line (the traceback with ``--debug``).
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "InputError",
    "ModelError",
    "OutputError",
    "PipelineError",
    "VidrestoreError",
]


class VidrestoreError(Exception):
    """Base of every error vidrestore raises on purpose."""

    exit_code: int = 1
    kind: str = "internal"


class ConfigError(VidrestoreError, ValueError):
    """Bad usage or configuration: an unknown key, a wrong type, a value out of range."""

    exit_code = 2
    kind = "config"


class ModelError(VidrestoreError):
    """Model weights missing, unverifiable, corrupt or of the wrong architecture."""

    exit_code = 3
    kind = "model"


class InputError(VidrestoreError, OSError):
    """The input cannot be read, or is not a video or image we can decode."""

    exit_code = 4
    kind = "input"


class OutputError(VidrestoreError, OSError):
    """The output cannot be written (exists without --overwrite, is the input, bad encoder)."""

    exit_code = 2
    kind = "output"


class PipelineError(VidrestoreError, RuntimeError):
    """A stage failed part-way; names the stage and the frame it was working on."""

    exit_code = 1
    kind = "pipeline"

    def __init__(self, stage: str, frame_index: int | None, message: str) -> None:
        where = f"stage {stage!r}" + (f", frame {frame_index}" if frame_index is not None else "")
        super().__init__(f"{where}: {message}")
        self.stage = stage
        self.frame_index = frame_index

    @classmethod
    def during(
        cls, stage: str, exc: BaseException, first: int, last: int | None = None, doing: str = ""
    ) -> PipelineError:
        """The error for an unexpected ``exc`` while ``stage`` worked on frames ``first``..``last``
        together (``doing`` says how, e.g. "detecting"); raise it ``from exc``."""
        together = f" ({doing} frames {first}-{last} together)" if last is not None and last != first else ""
        return cls(stage, first, f"{type(exc).__name__}: {exc}{together}")
