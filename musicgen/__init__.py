"""musicgen: learn folk music from ABC notation and MIDI files and write new tunes.

Importing this package must stay cheap: TensorFlow is imported only by the modules that need it.
"""

__version__ = "0.1.0"
