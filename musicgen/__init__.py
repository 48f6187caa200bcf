"""musicgen: learn folk music from ABC notation and MIDI files and write new tunes.

Importing this package must stay cheap: TensorFlow is imported only by the modules that need it.
"""

import os

__version__ = "0.1.0"

# oneDNN's CPU kernels, unless the user chose: TensorFlow 2.21 leaves them off on CPUs it does not
# recognise (this project's AMD EPYC), and there the reference recipe trained 2.6 to 3.4x slower,
# musicgen's default 1.3x (`bench/onednn.py`, docs/figures.md). TensorFlow reads the variable once,
# when it loads, so it is set here, before any module of musicgen can import TensorFlow.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
