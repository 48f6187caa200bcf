"""ABC -> sheet music (SVG), engraved by verovio in a worker process that may die.

verovio 6.4.1's ABC reader is C++ that can end the process it runs in: on some tunes it throws a
`std::out_of_range` nobody catches (SIGABRT) or reads past its buffer (SIGSEGV). Measured on the
bundled corpus: 21 of its 4,415 tunes killed raw verovio; a space at each line end saved 6 of them.
So this module does both:

- `engraving_text` rewrites a tune into text verovio reads safely without changing its music:
  every line ends in a space, `\\` continuations and chords split over two lines are joined,
  ABC 1.6's lone `!` line breaks become real ones, and `:]` (a typo for `:|]`) is mended. With
  these rules every tune of the bundled corpus engraves.
- verovio runs only in a worker: a fresh interpreter (`python -m musicgen.music.score`, which
  imports this module and verovio, never TensorFlow) that reads tunes on its standard input and
  writes results on its standard output. When it dies or overruns a tune's time limit, that tune
  gets a reason, the worker is started again, and the batch goes on.

The SVG marks each written note (grace notes and each note of a chord included) with
`class="note"`; `ScoreResult.notes` counts them.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import re
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_TIMEOUT = 10.0  # seconds per tune; a normal tune takes about 15 ms
STARTUP_TIMEOUT = 60.0  # seconds for a new worker to import verovio (slow on a busy machine)
MAX_CHARACTERS = 100_000  # longer texts are not engraved: no folk tune comes near this
WORKER_MEMORY = 1 << 30  # bytes of address space a worker may take (it needs about 50 MB)
CRASHED = "engraver crashed"
TIMED_OUT = "timed out"

# Layout: one page as tall as the music, no footer, sized by its viewBox so a page scales it.
VEROVIO_OPTIONS = {
    "inputFrom": "abc",
    "adjustPageHeight": True,
    "pageHeight": 60000,
    "pageWidth": 2100,
    "scale": 40,
    "footer": "none",
    "header": "auto",
    "breaks": "auto",
    "svgViewBox": True,
    "xmlIdSeed": 1,
}

_FIELD_LINE = re.compile(r"[A-Za-z+]:")
_DECORATION = re.compile(r"![^!\s]+!")
_BAD_END_REPEAT = re.compile(r"(?<!\[[A-Za-z]):\]")
_TRAILING_TUPLET = re.compile(r"\(\d[\d:]*\s*$")
_NOTE_ELEMENT = re.compile(r"""class=["']note["']""")
_FRAME = struct.Struct(">I")  # length prefix of each JSON message between parent and worker


@dataclass
class ScoreResult:
    """One tune's sheet music.

    Attributes:
        svg: the SVG document, or None when the tune could not be engraved.
        reason: why not ("engraver crashed", "timed out", verovio's complaint...); "" when engraved.
        notes: note heads in the SVG (elements with `class="note"`).
    """

    svg: str | None
    reason: str = ""
    notes: int = 0


def count_notes(svg: str) -> int:
    """How many note heads (elements of class "note") an SVG from verovio holds."""
    return len(_NOTE_ELEMENT.findall(svg))


def engraving_text(text: str) -> str:
    """`text` rewritten so verovio's ABC reader does not abort on it; the music is unchanged.

    Header field lines are kept as they are. In the body, a line ending in `\\` is joined to the
    next (ABC's continuation), as is a line that leaves a chord `[` open; a `!` that is not part of
    a `!decoration!` (ABC 1.6's line break) ends the line; `:]` becomes `:|]`; an unclosed `"` and
    a tuplet mark ending a line (a generated tune cut off there) are dropped. Blank lines are
    dropped, every line ends in a space, a text that does not start with `X:` gets `X:1`, and
    a tune whose music does not end in a bar line gets one.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kept: list[str] = []
    pending = ""
    for line in lines:
        line = pending + line
        pending = ""
        if _FIELD_LINE.match(line):
            kept.append(line)
            continue
        protected = _DECORATION.sub(lambda match: match.group(0).replace("!", "\0"), line)
        line = protected.replace("!", "\n").replace("\0", "!")
        line = _BAD_END_REPEAT.sub(":|]", line)
        if line.count('"') % 2:
            line = line[: line.rindex('"')]  # an unclosed annotation: a cut-off generated tune
        line = _TRAILING_TUPLET.sub("", line)  # a tuplet with no notes after it
        stripped = line.rstrip()
        if stripped.endswith("\\"):
            pending = stripped[:-1] + " "
        elif line.count("[") > line.count("]"):
            pending = line + " "
        else:
            kept.append(line)
    kept.append(pending)
    lines = [line.rstrip() for line in "\n".join(kept).split("\n") if line.strip()]
    if not lines or not lines[0].startswith("X:"):
        lines.insert(0, "X:1")  # verovio reads nothing sound before a tune's X: line
    if not _FIELD_LINE.match(lines[-1]) and lines[-1][-1] not in "|]:":
        lines[-1] += " |"  # verovio drops the notes after a tune's last bar line
    return "".join(f"{line} \n" for line in lines)


class Engraver:
    """Engraves ABC tunes in a long-lived worker process, started on first use.

    Safe to share between threads: one batch is engraved at a time. Use as a context manager or
    call `close()` when done.

    Args:
        timeout: seconds one tune may take before the worker is killed and the tune gets
            "timed out".
    """

    def __init__(self, timeout: float = DEFAULT_TIMEOUT):
        self.timeout = timeout
        self._lock = threading.Lock()
        self._worker: _Worker | None = None
        self.restarts = 0  # workers started again after a crash or a time-out

    def engrave(self, texts: Sequence[str], timeout: float | None = None) -> list[ScoreResult]:
        """Engraves each tune; never raises for a bad tune.

        Args:
            texts: ABC tunes, one text each (a header and a body, as `musicgen.music.abc` writes).
            timeout: seconds per tune; default the engraver's.

        Returns:
            One ScoreResult per text, in order.
        """
        timeout = self.timeout if timeout is None else timeout
        results: list[ScoreResult | None] = [None] * len(texts)
        todo = []
        for index, text in enumerate(texts):
            problem = _unengravable(text)
            if problem:
                results[index] = ScoreResult(None, problem)
            else:
                todo.append(index)
        with self._lock:
            while todo:
                done = self._engrave_some([texts[i] for i in todo], timeout)
                for index, result in zip(todo, done):
                    results[index] = result
                todo = todo[len(done) :]
        return results  # type: ignore[return-value]

    def _engrave_some(self, texts: list[str], timeout: float) -> list[ScoreResult]:
        """Results for the first texts, up to and including the first one that kills the worker."""
        try:
            worker = self._running_worker()
        except _WorkerFailed as exc:
            return [ScoreResult(None, f"engraver did not start: {exc}") for _ in texts]
        worker.send([engraving_text(text) for text in texts])
        done = []
        for _ in texts:
            try:
                done.append(ScoreResult(**worker.receive(timeout)))
            except _WorkerFailed as exc:
                self._stop_worker()
                self.restarts += 1
                done.append(ScoreResult(None, str(exc)))
                break
        return done

    def _running_worker(self) -> _Worker:
        if self._worker is None or not self._worker.alive():
            self._stop_worker()
            self._worker = _Worker.start()
        return self._worker

    def _stop_worker(self) -> None:
        if self._worker is not None:
            self._worker.stop()
            self._worker = None

    def close(self) -> None:
        """Stops the worker; a later `engrave` starts a new one."""
        with self._lock:
            self._stop_worker()

    def __enter__(self) -> Engraver:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


_default_engraver: Engraver | None = None
_default_lock = threading.Lock()


def engrave(texts: Sequence[str], timeout: float = DEFAULT_TIMEOUT) -> list[ScoreResult]:
    """Engraves each tune with a shared `Engraver` (its worker lives until the program ends).

    Never raises for a bad tune and never kills the caller: a tune that crashes or hangs the
    engraver gets a `reason` and the tunes after it are still engraved.
    """
    global _default_engraver
    with _default_lock:
        if _default_engraver is None:
            _default_engraver = Engraver(timeout)
            atexit.register(_default_engraver.close)
    return _default_engraver.engrave(texts, timeout)


def _unengravable(text: str) -> str:
    if not isinstance(text, str) or not text.strip():
        return "empty tune"
    if len(text) > MAX_CHARACTERS:
        return f"too long to engrave ({len(text):,} characters; at most {MAX_CHARACTERS:,})"
    if "\0" in text:
        return "the tune holds a NUL character"
    if not re.search(r"^K:", text, re.MULTILINE):
        return "no K: line, so no music to engrave"  # verovio dies on such text
    return ""


class _WorkerFailed(Exception):
    """The worker died, overran its time or could not start; the message is the tune's reason."""


class _Worker:
    """One `python -m musicgen.music.score` process and a thread reading its answers."""

    def __init__(self, process: subprocess.Popen):
        self.process = process
        self.answers: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    @classmethod
    def start(cls) -> _Worker:
        environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
        # -P keeps the current folder off the worker's path; this package's folder goes first.
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        environment["PYTHONPATH"] = os.pathsep.join(
            [package_root, *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        process = subprocess.Popen(
            [sys.executable, "-P", "-m", "musicgen.music.score"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=environment,
        )
        worker = cls(process)
        try:
            ready = worker.receive(STARTUP_TIMEOUT)
        except _WorkerFailed as exc:
            worker.stop()
            raise _WorkerFailed(str(exc).replace(CRASHED, "worker exited")) from None
        if "error" in ready:
            worker.stop()
            raise _WorkerFailed(ready["error"])
        return worker

    def _read(self) -> None:
        stream = self.process.stdout
        while True:
            message = _read_frame(stream)
            self.answers.put(message)
            if message is None:
                return

    def alive(self) -> bool:
        return self.process.poll() is None

    def send(self, texts: list[str]) -> None:
        try:
            _write_frame(self.process.stdin, texts)
        except OSError:
            pass  # the worker is gone; receive() says so

    def receive(self, timeout: float) -> dict:
        try:
            message = self.answers.get(timeout=timeout)
        except queue.Empty:
            raise _WorkerFailed(TIMED_OUT) from None
        if message is None:
            raise _WorkerFailed(CRASHED)
        return message

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass


def _write_frame(stream, message) -> None:
    data = json.dumps(message).encode("utf-8")
    stream.write(_FRAME.pack(len(data)) + data)
    stream.flush()


def _read_frame(stream):
    """The next message, or None at the end of the stream (the other side is gone)."""
    head = stream.read(_FRAME.size)
    if len(head) < _FRAME.size:
        return None
    (size,) = _FRAME.unpack(head)
    data = stream.read(size)
    if len(data) < size:
        return None
    return json.loads(data.decode("utf-8"))


# The worker's side. -----------------------------------------------------------------------------


def _serve() -> None:
    """Reads batches of tunes on stdin and answers one result per tune on stdout, for ever."""
    # The protocol gets its own copy of stdout; file descriptor 1 then points at the log file, so
    # nothing verovio's C++ prints can corrupt a message. File descriptor 2 (verovio's log) goes
    # to the same temporary file, read back after each tune for its complaint.
    protocol = os.fdopen(os.dup(1), "wb")
    requests = sys.stdin.buffer
    log = tempfile.TemporaryFile()
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    _limit_memory()
    try:
        toolkit = _toolkit()
    except Exception as exc:  # noqa: BLE001 - any failure to load verovio goes to the parent
        _write_frame(protocol, {"error": f"cannot load verovio ({type(exc).__name__}: {exc})"})
        return
    _write_frame(protocol, {"ready": True})
    while True:
        texts = _read_frame(requests)
        if texts is None:
            return
        for text in texts:
            try:
                result = _engrave_one(toolkit, text, log)
            except Exception as exc:  # noqa: BLE001 - a Python error of one tune is its reason
                result = {"svg": None, "reason": f"verovio failed ({type(exc).__name__})"}
            _write_frame(protocol, result)


def _limit_memory() -> None:
    """A runaway allocation then ends the worker (a crash the parent handles), not the machine."""
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY, WORKER_MEMORY))
    except (ImportError, ValueError, OSError):
        pass  # no such limit on this system


def _toolkit():
    import verovio

    verovio.enableLog(verovio.LOG_ERROR)
    toolkit = verovio.toolkit()
    toolkit.setOptions(VEROVIO_OPTIONS)
    return toolkit


def _engrave_one(toolkit, text: str, log) -> dict:
    log.seek(0)
    log.truncate()
    toolkit.resetXmlIdSeed(1)  # the same tune gives the same SVG
    if not toolkit.loadData(text):
        return {"svg": None, "reason": _complaint(log) or "verovio could not read the tune"}
    svg = toolkit.renderToSVG(1)
    notes = count_notes(svg)
    if not notes:
        return {"svg": None, "reason": _complaint(log) or "no notes to engrave"}
    return {"svg": svg, "reason": "", "notes": notes}


def _complaint(log) -> str:
    """verovio's first error line of the tune just read, without its "[Error] " prefix."""
    log.seek(0)
    for line in log.read().decode("utf-8", "replace").splitlines():
        if line.startswith("[Error]"):
            return "verovio: " + line.removeprefix("[Error]").strip()[:200]
    return ""


if __name__ == "__main__":
    _serve()
