"""A model's weights: the model a run's config.json describes, built with its weights, and the
weights as checkpoints store them, restored only after every name and shape is checked.
"""

from __future__ import annotations

from pathlib import Path

from musicgen.config import RunConfig
from musicgen.errors import CheckpointError, first_line
from musicgen.tfsetup import import_tensorflow

tf = import_tensorflow()

WEIGHTS_KEY = "model_weights"  # top-level name of the weights in the checkpoint's object graph


def model_weights(model) -> dict:
    """The model's variables keyed by their path inside the model, e.g. "lstm_0/lstm_cell/kernel".

    Checkpoints store this dict rather than the model object: TensorFlow's object graph does not see
    layers that a Keras 3 model keeps in a Python list, and would silently skip their weights. The
    model's own name (which Keras numbers per process) is dropped from the keys.
    """
    weights = {}
    for variable in model.weights:
        key = variable.path.split("/", 1)[-1]
        if key in weights:
            raise ValueError(f"two model variables share the path {key!r}")
        weights[key] = variable
    return weights


def build_model_for(config: RunConfig, *, policy: str | None = None):
    """Builds the model `config` describes and creates its weights (by calling it on one token).

    Args:
        config: the run's settings.
        policy: a Keras dtype policy for this model only ("float32"); None keeps the global one.
    """
    import keras

    from musicgen.models import build_model

    previous = keras.mixed_precision.global_policy()
    if policy is not None:
        keras.mixed_precision.set_global_policy(policy)
    try:
        model = build_model(config.model)
        model(tf.zeros((1, 1), tf.int32), training=False)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    return model


def restore_weights(model, checkpoint_path: str, source: Path) -> None:
    """Restores only the model's weights from a checkpoint, after checking every name and shape.

    Raises:
        CheckpointError: the checkpoint is unreadable or its weights do not fit the model.
    """
    try:
        saved = {name: tuple(shape) for name, shape in tf.train.list_variables(checkpoint_path)}
    except (tf.errors.OpError, ValueError) as exc:
        raise CheckpointError(f"{source}: checkpoint unreadable ({first_line(exc)})") from None
    weights = model_weights(model)
    _check_weights_fit(model, weights, saved, source)
    try:
        # Only the weights are read: the optimizer and step stay in the file, unread on purpose.
        tf.train.Checkpoint(**{WEIGHTS_KEY: weights}).restore(checkpoint_path).expect_partial()
    except (ValueError, IndexError, tf.errors.OpError) as exc:
        # A truncated data file surfaces as IndexError ("Read less bytes than requested").
        message = f"{source}: cannot restore the weights ({first_line(exc)})"
        raise CheckpointError(message) from None


def check_weight_shapes(model, shapes: dict[str, tuple], source: Path) -> None:
    """`restore_weights`' check for weights stored by their `model_weights` key (a bundled
    model's `.npz`): exactly the model's weights, each of the model's shape.

    Raises:
        CheckpointError: naming `source` and the first weight that does not fit.
    """
    saved = {_checkpoint_key(key): tuple(shape) for key, shape in shapes.items()}
    _check_weights_fit(model, model_weights(model), saved, source)


def _check_weights_fit(model, weights: dict, saved: dict, source: Path) -> None:
    """Raises CheckpointError unless the checkpoint (`saved`: name -> shape) holds exactly the
    model's weights, each with the model's shape."""
    expected = {_checkpoint_key(key): key for key in weights}
    missing = [key for name, key in expected.items() if name not in saved]
    unexpected = [n for n in saved if n.startswith(WEIGHTS_KEY + "/") and n not in expected]
    if missing or unexpected:
        problems = []
        if missing:
            problems.append(
                f"{len(missing)} model weights not in the checkpoint, e.g. {missing[0]}"
            )
        if unexpected:
            problems.append(f"{len(unexpected)} checkpoint weights not in the model")
        raise CheckpointError(
            f"{source}: config.json does not match the weights ({'; '.join(problems)})"
        )
    for name, key in expected.items():
        shape = tuple(weights[key].shape)
        if shape != saved[name]:
            # A dimension of vocabulary size that differs means vocab.json belongs to another run.
            vocab_size = getattr(getattr(model, "config", None), "vocab_size", None)
            what = "vocabulary" if vocab_size in shape else "config.json"
            raise CheckpointError(
                f"{source}: {what} does not match the weights ({key}: model {shape}, checkpoint "
                f"{saved[name]})"
            )


def _checkpoint_key(weight_key: str) -> str:
    # TensorFlow escapes "/" inside a dict key as ".S" when it names the checkpointed value.
    return f"{WEIGHTS_KEY}/{weight_key.replace('/', '.S')}/.ATTRIBUTES/VARIABLE_VALUE"
