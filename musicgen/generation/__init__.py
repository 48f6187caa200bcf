"""Sampling new tunes from a trained model: the compiled sampler, the generator that turns
ids into tunes, the files each tune is written as (ABC, MIDI, WAV, SVG) and attention maps.
"""
