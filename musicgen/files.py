"""Small file-system helpers: atomic writes and safe file names taken from tune titles."""

from __future__ import annotations

import os
import re
import tempfile
import unicodedata
from pathlib import Path

MAX_STEM_LENGTH = 60
# Names Windows reserves for devices, whatever the extension (COM0 and LPT0 too, on recent Windows).
_RESERVED = {"con", "prn", "aux", "nul", "conin", "conout", "clock"} | {
    f"{port}{i}" for port in ("com", "lpt") for i in range(10)
}


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Writes `data` to `path` so a reader sees the old file or the whole new one, never a part."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates the file 0600; give it the permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:
            # A failed write (a full disk) names no file: name the one we were writing.
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def safe_stem(title: str, fallback: str = "tune") -> str:
    """Turns a tune title into a file-name stem that cannot leave its folder.

    Keeps ASCII letters, digits, '-' and '_' (accents are folded, everything else, '/', '\\', '.'
    and ':' included, becomes '_'), never starts with '-' or '_', caps the length at
    MAX_STEM_LENGTH, and avoids empty names and Windows device names (CON, NUL, COM1...), which
    get a '_' appended. `fallback`, used when nothing of the title is left, is made safe the same
    way.
    """
    folded = unicodedata.normalize("NFKD", str(title)).encode("ascii", "ignore").decode("ascii")
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", folded).strip("_-")[:MAX_STEM_LENGTH].rstrip("_-")
    if not stem:
        return safe_stem(fallback) if fallback and fallback != title else "tune"
    if stem.lower() in _RESERVED:
        stem = f"{stem}_"
    return stem


def unused_stem(folder: Path, stem: str, suffixes: tuple[str, ...]) -> str:
    """Returns `stem`, or `stem-2`, `stem-3`... so no `stem+suffix` already exists in `folder`."""
    candidate, n = stem, 1
    while any((folder / f"{candidate}{suffix}").exists() for suffix in suffixes):
        n += 1
        candidate = f"{stem}-{n}"
    return candidate
