"""MIDI files for the ingestion tests, written with mido alone (not with musicgen's renderer), and
one broken file of each kind the issue lists."""

from __future__ import annotations

import struct
from pathlib import Path

import mido

TPB = 480  # ticks a quarter note
BAD_KINDS = (
    "truncated", "corrupt", "type-2", "no-notes", "drums-only", "fast-tempo", "slow-tempo", "huge",
    "too-many-notes", "too-long", "smpte",
)  # fmt: skip
BAD_REASONS = {
    "truncated": "midi-truncated", "corrupt": "midi-corrupt", "type-2": "midi-type-2",
    "no-notes": "midi-no-notes", "drums-only": "midi-drums-only", "fast-tempo": "midi-bad-tempo",
    "slow-tempo": "midi-bad-tempo", "huge": "midi-too-large", "too-many-notes": "midi-too-large",
    "too-long": "midi-too-long", "smpte": "midi-smpte",
}  # fmt: skip


def note_track(notes, channel=0, name=None, program=None) -> mido.MidiTrack:
    """A track from (start, length, pitch[, velocity]) in quarter notes."""
    events = []
    for note in notes:
        start, length, pitch = note[:3]
        velocity = note[3] if len(note) > 3 else 90
        on, off = round(start * TPB), round((start + length) * TPB)
        events.append((on, 1, mido.Message("note_on", channel=channel, note=pitch,
                                           velocity=velocity)))  # fmt: skip
        events.append((off, 0, mido.Message("note_off", channel=channel, note=pitch)))
    events.sort(key=lambda event: (event[0], event[1]))
    track = mido.MidiTrack()
    if name is not None:
        track.append(mido.MetaMessage("track_name", name=name))
    if program is not None:
        track.append(mido.Message("program_change", channel=channel, program=program))
    now = 0
    for tick, _, message in events:
        track.append(message.copy(time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    return track


def conductor(title=None, qpm=120, meter=(4, 4), key="C") -> mido.MidiTrack:
    """Track 1 of a type-1 file: sequence name, tempo, time and key signatures (None: left out)."""
    track = mido.MidiTrack()
    if title is not None:
        track.append(mido.MetaMessage("track_name", name=title))
    if qpm is not None:
        track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(qpm)))
    if meter is not None:
        track.append(mido.MetaMessage("time_signature", numerator=meter[0], denominator=meter[1]))
    if key is not None:
        track.append(mido.MetaMessage("key_signature", key=key))
    track.append(mido.MetaMessage("end_of_track", time=0))
    return track


def save(path: Path, tracks, kind: int = 1) -> Path:
    midi = mido.MidiFile(type=kind, ticks_per_beat=TPB)
    midi.tracks.extend(tracks)
    midi.save(path)
    return path


def melody_file(path: Path, notes, **conductor_options) -> Path:
    """A type-1 file: a conductor track and one melody track."""
    return save(path, [conductor(**conductor_options), note_track(notes)])


def scale_notes(pitches, length=0.5):
    return [(i * length, length, pitch) for i, pitch in enumerate(pitches)]


def bad_midi(folder: Path, kind: str) -> Path:
    """A MIDI file broken in the way `kind` (one of BAD_KINDS) names."""
    path = folder / f"{kind}.mid"
    good = scale_notes([62, 64, 66, 67, 69, 71, 73, 74])
    if kind == "truncated":
        melody_file(path, good)
        path.write_bytes(path.read_bytes()[:-20])
    elif kind == "corrupt":
        data = bytearray(melody_file(path, good).read_bytes())
        data[:4] = b"RIFF"
        path.write_bytes(bytes(data))
    elif kind == "type-2":
        save(path, [note_track(good), note_track(good)], kind=2)
    elif kind == "no-notes":
        save(path, [conductor(title="Silence")])
    elif kind == "drums-only":
        save(path, [conductor(), note_track([(i / 2, 0.25, 42) for i in range(16)], channel=9)])
    elif kind in ("fast-tempo", "slow-tempo"):
        melody_file(path, good, qpm=None)
        midi = mido.MidiFile(path)
        tempo = 1 if kind == "fast-tempo" else 0xFFFFFF  # 60 million and 3.6 quarters a minute
        midi.tracks[0].insert(0, mido.MetaMessage("set_tempo", tempo=tempo))
        midi.save(path)
    elif kind in ("huge", "too-many-notes"):
        path.write_bytes(_many_notes(200_000 if kind == "huge" else 25_000))
    elif kind == "too-long":  # two notes 2**27 ticks apart: days of silence
        track = note_track([(0, 0.5, 62)])
        track.insert(-1, mido.Message("note_on", note=64, velocity=80, time=2**27))
        track.insert(-1, mido.Message("note_off", note=64, time=TPB))
        save(path, [conductor(), track])
    elif kind == "smpte":
        data = bytearray(melody_file(path, good).read_bytes())
        data[12:14] = struct.pack(">h", -(25 << 8) + 40)  # 25 frames a second, 40 ticks each
        path.write_bytes(bytes(data))
    else:
        raise ValueError(kind)
    return path


def _many_notes(count: int) -> bytes:
    """A valid type-0 file of `count` sixteenth notes, written byte by byte (mido is too slow for
    a file this size): 6 bytes a note with running status."""
    events = b"".join(bytes([0, 60 + i % 24, 64, 120, 60 + i % 24, 0]) for i in range(count))
    track = b"\x00\x90" + events[1:] + b"\x00\xff\x2f\x00"
    header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, TPB)
    return header + b"MTrk" + struct.pack(">I", len(track)) + track
