"""Music in and out, with no model and no TensorFlow: the ABC reader and music theory,
transposition and the tune's home key, the ABC -> MIDI renderer, MIDI -> ABC ingestion, audio and
sheet music.
"""
