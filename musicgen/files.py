"""Small file-system helpers: atomic writes, exclusive publishing, safe names from tune titles."""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
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
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        # Name the file the user asked for, not the temporary one.
        raise OSError(exc.errno, exc.strerror, str(path)) from None
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


def read_run_file(path: Path, error: type[Exception]) -> str:
    """The text of one of a run directory's JSON files; a missing one raises `error` in one line."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: missing; is this a musicgen run directory?") from None


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


def write_new_text(path: Path, text: str) -> None:
    """Writes `path` whole, failing with FileExistsError if it exists, even if another process
    creates it meanwhile (a staged file linked into place, never check-then-write)."""
    path = Path(path)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=".musicgen-staging-"))
    try:
        staged = staging / path.name
        atomic_write_text(staged, text)
        _link_exclusive(staged, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class Publisher:
    """Puts groups of files (one tune's `.abc`, `.mid`, `.wav`...) into a folder under free names.

    Each group is first written into a hidden staging folder inside `folder` (`stage(stem,
    suffix)` gives the path), then published under `stem`, `stem-2`, `stem-3`... with hard links,
    which fail if the name exists: no check-then-write, so two processes writing into one folder
    at once never lose a file. The folder is listed once and the next free number of every stem
    is remembered, so each file costs constant time however many share a title. With `force`,
    files of the same name are replaced (and the stem's other `suffixes` removed, so no stale
    `.wav` stays beside a new tune that does not render). Use it as a context manager: leaving it
    removes the staging folder and whatever is left in it (an interrupted group).
    """

    def __init__(self, folder: Path, suffixes: tuple[str, ...], *, force: bool = False):
        self.folder = Path(folder)
        self.suffixes = suffixes
        self.force = force
        self._staging = Path(tempfile.mkdtemp(dir=self.folder, prefix=".musicgen-staging-"))
        self._existing = {name.lower() for name in os.listdir(self.folder)}
        self._next_number: dict[str, int] = {}
        self._taken: set[str] = set()  # stems published by this publisher

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc_info) -> None:
        shutil.rmtree(self._staging, ignore_errors=True)

    def stage(self, stem: str, suffix: str) -> Path:
        """Where to write the file `stem + suffix` before it is published."""
        return self._staging / f"{stem}{suffix}"

    def publish(self, stem: str, staged: list[Path]) -> dict[str, Path]:
        """Moves the `staged` files of `stem` into the folder under the first free stem.

        Returns:
            The published path of each staged file's suffix.
        """
        number = self._next_number.get(stem.lower(), 1)
        while True:
            candidate = stem if number == 1 else f"{stem}-{number}"
            number += 1
            if candidate.lower() in self._taken or (not self.force and self._seen(candidate)):
                continue
            published = self._link_all(candidate, staged)
            if published is not None:
                self._next_number[stem.lower()] = number
                self._taken.add(candidate.lower())
                return published

    def _seen(self, candidate: str) -> bool:
        return any(f"{candidate}{suffix}".lower() in self._existing for suffix in self.suffixes)

    def _link_all(self, candidate: str, staged: list[Path]) -> dict[str, Path] | None:
        """Links every staged file under `candidate`; None (and nothing left) if a name is taken."""
        published: dict[str, Path] = {}
        for path in staged:
            target = self.folder / f"{candidate}{path.suffix}"
            if self.force and _replaceable(target):
                os.replace(path, target)
            else:
                try:
                    _link_exclusive(path, target)
                except FileExistsError:
                    for done in published.values():
                        done.unlink(missing_ok=True)
                    self._existing.add(target.name.lower())
                    return None
                path.unlink()
            published[path.suffix] = target
            self._existing.add(target.name.lower())
        if self.force:
            for suffix in set(self.suffixes) - set(published):
                old = self.folder / f"{candidate}{suffix}"
                if old.is_file() or old.is_symlink():
                    old.unlink()
        return published


def _replaceable(path: Path) -> bool:
    """True when `--force` may put a file at `path`: nothing there, or a file or symlink (never a
    folder, FIFO or device, which are skipped as taken names)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return True
    return stat.S_ISREG(mode) or stat.S_ISLNK(mode)


def _link_exclusive(source: Path, target: Path) -> None:
    """Creates `target` with `source`'s bytes, failing with FileExistsError if it exists."""
    try:
        os.link(source, target)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        # A file system without hard links: an exclusive create, then the bytes.
        with open(target, "xb") as handle, open(source, "rb") as data:
            shutil.copyfileobj(data, handle)
            handle.flush()
            os.fsync(handle.fileno())
