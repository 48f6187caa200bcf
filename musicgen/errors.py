"""The errors musicgen raises for a user's mistake or a bad input.

The CLI turns any MusicgenError into one line on stderr and a non-zero exit; anything else is a bug
and keeps its traceback.
"""

import sys


class MusicgenError(Exception):
    """Base class: a problem the user can fix, described in one line."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (TensorFlow's errors: of their `message`), or
    its type's name when it has none: what a one-line error quotes of a lower-level failure."""
    text = str(getattr(exc, "message", exc)).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def print_to_stderr(message: str) -> None:
    """Where a library function's one-line warnings and notes go when its caller gives no `log`."""
    print(message, file=sys.stderr, flush=True)


class ConfigError(MusicgenError):
    """A setting is of the wrong type or out of range; `field` names the setting."""

    def __init__(self, message: str, field: str = ""):
        super().__init__(message)
        self.field = field


class CorpusError(MusicgenError):
    """A corpus path is missing, unreadable or holds no usable tune."""


class ParseError(MusicgenError):
    """One tune cannot be used; `reason` is a short stable key for counting (e.g. "no-key")."""

    def __init__(self, message: str, reason: str = "invalid"):
        super().__init__(message)
        self.reason = reason


class VocabularyError(MusicgenError):
    """Text holds characters the vocabulary does not know, or a vocabulary file is bad."""


class CheckpointError(MusicgenError):
    """A run directory is missing files, or its files do not belong together."""


class GenerationError(MusicgenError):
    """Generation options or the seed are unusable."""


class RenderError(MusicgenError):
    """An ABC tune cannot be turned into MIDI; `reason` is a short stable key."""

    def __init__(self, message: str, reason: str = "invalid"):
        super().__init__(message)
        self.reason = reason


class AudioError(MusicgenError):
    """A MIDI file cannot be turned into audio or played."""


class TrainingError(MusicgenError):
    """Training cannot go on, e.g. the loss became NaN; the last good checkpoint is kept."""
