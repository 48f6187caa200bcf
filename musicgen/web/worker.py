"""One worker thread that runs model work, one job at a time, behind a bounded queue.

TensorFlow work must stay off the event loop (it would freeze every other request) and must not
run two batches at once on a small CPU (each would only slow the other). A full queue is refused
at once rather than left to grow: the app answers 503 with `Retry-After`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future

_STOP = object()


class QueueFull(Exception):
    """The worker already has as many jobs waiting as it accepts."""


class Worker:
    """Runs submitted callables in order in one daemon thread.

    Args:
        queue_size: jobs that may wait behind the running one; more are refused with QueueFull.
    """

    def __init__(self, queue_size: int = 4):
        self.queue_size = queue_size
        self._jobs: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._waiting = 0
        self._thread = threading.Thread(target=self._run, name="musicgen-worker", daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        """Jobs queued and not yet started."""
        with self._lock:
            return self._waiting

    def submit(self, job: Callable[[], object]) -> Future:
        """Queues `job`; its Future holds what it returns or raises.

        Raises:
            QueueFull: `queue_size` jobs are already waiting.
        """
        future: Future = Future()
        with self._lock:
            if self._waiting >= self.queue_size:
                raise QueueFull(f"{self._waiting} requests are already waiting")
            self._waiting += 1
        self._jobs.put((job, future))
        return future

    def stop(self, timeout: float | None = None) -> None:
        """Lets the running job finish, cancels the waiting ones and ends the thread."""
        while True:
            try:
                _, future = self._jobs.get_nowait()
            except queue.Empty:
                break
            with self._lock:
                self._waiting -= 1
            future.cancel()
        self._jobs.put((_STOP, None))
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            job, future = self._jobs.get()
            if job is _STOP:
                return
            with self._lock:
                self._waiting -= 1
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(job())
            except BaseException as exc:  # the job's error belongs to its request, not the thread
                future.set_exception(exc)
