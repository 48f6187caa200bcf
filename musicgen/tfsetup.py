"""The one way into TensorFlow: quiet logging, device description, mixed precision.

Importing this module is cheap; TensorFlow is imported on the first call that needs it, so the CLI
can import musicgen modules at start-up without paying about 2.7 s for `import tensorflow`.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile

# TensorFlow's C++ runtime logs through absl before absl has read TF_CPP_MIN_LOG_LEVEL, so on
# import and on the first device query it prints info lines whatever the level says. These patterns
# give the lowest TF_CPP_MIN_LOG_LEVEL at which we drop each kind of line ourselves.
_NOISE = (
    (1, re.compile(r"^I\d{4} \d\d:\d\d:\d\d")),
    (2, re.compile(r"^W\d{4} \d\d:\d\d:\d\d")),
    (2, re.compile(r"^WARNING: All log messages before absl::InitializeLog\(\)")),
    # The CUDA probe failing on a machine without a GPU: describe_devices() says "CPU" instead.
    (2, re.compile(r"^E\d{4} .*(cuInit|cuda_platform|cuda_dnn|cuda_blas|cuda_fft)")),
)


LOGICAL_CPUS_ENV = "MUSICGEN_LOGICAL_CPUS"


def import_tensorflow():
    """Imports TensorFlow with its C++ info/warning chatter off, unless the user set the level.

    Also looks for GPUs once, inside the same quiet block, since that first probe is where a
    machine without CUDA logs its errors. When `MUSICGEN_LOGICAL_CPUS` is set to N > 1, the CPU
    is split into N logical devices, so `--strategy mirrored` can be tried (and tested) without
    GPUs; this has to happen before TensorFlow starts its runtime, hence here.

    Returns:
        The `tensorflow` module.
    """
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    # Must be set before the first import: TensorFlow reads it once, when its C++ runtime loads.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    with _quiet_native_stderr():
        import tensorflow as tf

        _split_cpu(tf)
        tf.config.list_physical_devices("GPU")
    return tf


def _split_cpu(tf) -> None:
    try:
        count = int(os.environ.get(LOGICAL_CPUS_ENV, "1"))
    except ValueError:
        count = 1
    if count > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * count
        )


def gpu_devices() -> list:
    """The physical GPUs TensorFlow can use (an empty list on a CPU-only machine)."""
    return import_tensorflow().config.list_physical_devices("GPU")


@contextlib.contextmanager
def _quiet_native_stderr():
    """Drops TensorFlow's start-up noise from file descriptor 2 and passes everything else on.

    Works on the descriptor, not `sys.stderr`, because the noise comes from C++. Follows
    TF_CPP_MIN_LOG_LEVEL.
    """
    try:
        level = int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        level = 0
    noise = [pattern for min_level, pattern in _NOISE if level >= min_level]
    try:
        saved = os.dup(2) if noise else None
    except OSError:  # no descriptor 2 at all
        saved = None
    if saved is None:
        yield
        return
    sys.stderr.flush()
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode("utf-8", "replace").splitlines(keepends=True)
            kept = "".join(
                line for line in lines if not any(pattern.match(line) for pattern in noise)
            )
            if kept:
                # Through the descriptor, where it would have gone without us.
                os.write(2, kept.encode("utf-8"))


def describe_devices() -> str:
    """Names the device training will run on, e.g. "CPU (2 cores)" or "1 GPU: NVIDIA A100".

    Returns:
        One short line for a log.
    """
    tf = import_tensorflow()
    gpus = gpu_devices()
    if not gpus:
        return f"CPU ({os.cpu_count() or 1} cores)"
    names = []
    for gpu in gpus:
        try:
            details = tf.config.experimental.get_device_details(gpu)
        except (RuntimeError, ValueError):
            details = {}
        names.append(details.get("device_name", gpu.name))
    return f"{len(gpus)} GPU: {', '.join(names)}"


def set_mixed_precision(enabled: bool) -> str:
    """Sets the Keras global dtype policy for models built from now on.

    float16 pays on GPUs with tensor cores (and needs loss scaling, which `train` adds). On a CPU
    float16 is slow, while bfloat16 runs natively on CPUs with AVX512-BF16 or AMX and needs no loss
    scaling.

    Args:
        enabled: False restores plain float32.

    Returns:
        The policy name now in force: "float32", "mixed_float16" or "mixed_bfloat16".
    """
    import_tensorflow()
    import keras

    if not enabled:
        policy = "float32"
    elif gpu_devices():
        policy = "mixed_float16"
    else:
        policy = "mixed_bfloat16"
    keras.mixed_precision.set_global_policy(policy)
    return policy
