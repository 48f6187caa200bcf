"""What tests read back from real files: the tunes of a real tunebook (through the real ingestion
code) and a checkpoint's tensors (through TensorFlow's plain checkpoint reader, not our loader)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from musicgen.music.abc import Tune, read_text_file, split_tunebook


def tunes_from(path: Path) -> list[Tune]:
    """The tunes of a real tunebook, through the real ingestion code."""
    return split_tunebook(read_text_file(path), path.name)[0]


def read_checkpoint(prefix: str, part: str = "") -> dict[str, np.ndarray]:
    """Every tensor in a checkpoint whose name starts with `part`, but the save counter and the
    object graph (they say how often, and by which objects of which process, it was written)."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(prefix)
    skip = ("_CHECKPOINTABLE_OBJECT_GRAPH", "save_counter/")
    names = reader.get_variable_to_shape_map()
    return {
        name: reader.get_tensor(name)
        for name in names
        if name.startswith(part) and not name.startswith(skip)
    }


def training_fixture(*args, **kwargs):
    """`pytest.fixture` for a fixture that trains a model. conftest marks every test that uses it,
    directly or through another fixture, as slow: `pytest -m "not slow"` trains nothing."""

    def declare(function):
        function.trains_a_model = True
        return pytest.fixture(*args, **kwargs)(function)

    return declare
