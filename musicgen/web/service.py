"""What the server holds between requests: the models (each loaded once), the worker and its
queue, and the batches of files it wrote (the only files it serves).
"""

from __future__ import annotations

import asyncio
import math
import re
import secrets
import shutil
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

from musicgen.web.choices import ModelChoice
from musicgen.web.forms import FieldError, GenerateRequest, Limits
from musicgen.web.worker import Worker

MAX_BATCHES = 200  # batch folders kept on disk; older ones are removed
_BATCH_ID = re.compile(r"[0-9a-f]{32}")


def _warn(message: str) -> None:
    print(f"musicgen: {message}", file=sys.stderr, flush=True)


class Service:
    """The models, the worker and the files of one server.

    Args:
        choices: the models offered; the first is the default.
        out_root: a folder this server owns, for its batches' files.
        limits: what one request may ask for.
        queue_size: requests that may wait behind the running batch before 503.
        loader: `choice -> LoadedModel` (`musicgen.web.batch.load_choice`; tests may replace it).
    """

    def __init__(
        self,
        choices: Sequence[ModelChoice],
        out_root: Path,
        *,
        limits: Limits | None = None,
        queue_size: int = 4,
        loader: Callable | None = None,
    ):
        if not choices:
            raise ValueError("a server needs at least one model")
        self.choices = {choice.id: choice for choice in choices}
        self.out_root = Path(out_root)
        self.out_root.mkdir(parents=True, exist_ok=True)
        self.limits = limits or Limits()
        self.worker = Worker(queue_size)
        self._loader = loader
        self._loaded: dict[str, object] = {}
        self._known: dict[str, object] = {}
        self._known_lock = threading.Lock()
        self._batches: OrderedDict[str, frozenset[str]] = OrderedDict()
        self._batches_lock = threading.Lock()
        self._batch_seconds = 2.0  # a guess until the first batch is timed

    @property
    def model_ids(self) -> list[str]:
        return list(self.choices)

    def warm_up(self):
        """Loads the default model in the worker, so the first request finds it ready."""
        return self.worker.submit(lambda: self._model(self.model_ids[0]))

    def stop(self) -> None:
        self.worker.stop(timeout=30)

    def _model(self, model_id: str):
        """The loaded model of `model_id`; runs in the worker thread only."""
        if model_id not in self._loaded:
            loader = self._loader
            if loader is None:
                from musicgen.web.batch import load_choice as loader
            self._loaded[model_id] = loader(self.choices[model_id], warn=_warn)
        return self._loaded[model_id]

    def retry_after(self) -> int:
        """Seconds a refused client should wait: the queue's length times a batch's time."""
        return max(1, math.ceil((self.worker.waiting + 1) * self._batch_seconds))

    # --------------------------------------------------------------------------------------------
    # Requests

    def known(self, model_id: str):
        """The header values a model's training tunes used (`musicgen.data.controls.KnownHeaders`).

        Raises:
            FieldError: no such model.
            GenerationError: the run records none and its corpus cannot be read.
        """
        if model_id not in self.choices:
            raise FieldError("model", "no such model on this server; reload the page")
        with self._known_lock:
            if model_id not in self._known:
                from musicgen.data.controls import known_headers

                self._known[model_id] = known_headers(self.choices[model_id].run_dir)
            return self._known[model_id]

    def options(self, model_id: str) -> dict:
        """The keys, meters and tune types the page offers for a model, commonest first."""
        known = self.known(model_id)
        types = dict.fromkeys(name.lower() for name in known.types)
        return {"keys": list(known.keys), "meters": list(known.meters), "tune_types": list(types)}

    def check_header(self, request: GenerateRequest) -> None:
        """Refuses, before queueing, a key, meter or type the model's tunes never used.

        Raises:
            FieldError: as `musicgen.web.batch.header_seed`.
        """
        from musicgen.web.batch import header_seed

        header_seed(self.known(request.model), request)

    async def generate(self, request: GenerateRequest) -> dict:
        """Queues one batch and waits for it without blocking the event loop.

        Raises:
            QueueFull: the queue is full.
            FieldError: a value the model cannot use.
        """
        batch_id = secrets.token_hex(16)
        future = self.worker.submit(lambda: self._run_batch(request, batch_id))
        return await asyncio.wrap_future(future)

    def _run_batch(self, request: GenerateRequest, batch_id: str) -> dict:
        from musicgen.web.batch import make_batch

        started = time.perf_counter()
        loaded = self._model(request.model)
        folder = self.out_root / batch_id
        folder.mkdir()
        try:
            batch = make_batch(loaded, request, folder, f"/files/{batch_id}/")
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        self._remember(batch_id, folder)
        self._batch_seconds = time.perf_counter() - started
        batch["batch"] = batch_id
        return batch

    def _remember(self, batch_id: str, folder: Path) -> None:
        names = frozenset(p.name for p in folder.iterdir() if p.is_file() and p.name[0] != ".")
        with self._batches_lock:
            self._batches[batch_id] = names
            while len(self._batches) > MAX_BATCHES:
                old, _ = self._batches.popitem(last=False)
                shutil.rmtree(self.out_root / old, ignore_errors=True)

    def file(self, batch_id: str, name: str) -> Path | None:
        """The path of a file this server wrote, or None for anything else.

        Only a batch id this server made and a file name it wrote into that batch are accepted,
        compared as strings: nothing the client sends is joined to a path unchecked.
        """
        if not _BATCH_ID.fullmatch(batch_id):
            return None
        with self._batches_lock:
            names = self._batches.get(batch_id)
        if names is None or name not in names:
            return None
        path = self.out_root / batch_id / name
        return path if path.is_file() and not path.is_symlink() else None
