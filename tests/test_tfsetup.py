"""TensorFlow as musicgen starts it: oneDNN's CPU kernels on unless the user chose otherwise, read
from TensorFlow's own start-up log in a fresh interpreter."""

from __future__ import annotations

import os
import subprocess
import sys

IMPORT = "from musicgen.tfsetup import import_tensorflow; import_tensorflow()"


def tensorflow_log(**environment: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    env.update(TF_CPP_MIN_LOG_LEVEL="0", **environment)  # level 0: TensorFlow logs its choice
    done = subprocess.run([sys.executable, "-c", IMPORT], env=env, capture_output=True, text=True,
                          timeout=120, check=True)  # fmt: skip
    return done.stderr


def test_onednn_is_on_when_the_user_did_not_choose():
    log = tensorflow_log()
    assert "oneDNN custom operations are on" in log
    assert "Using the default setting" not in log


def test_the_users_choice_of_onednn_is_kept():
    log = tensorflow_log(TF_ENABLE_ONEDNN_OPTS="0")
    assert "oneDNN custom operations are on" not in log
