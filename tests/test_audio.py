"""Tests for musicgen.music.audio: real tunes to WAV through FluidSynth (library and program) and
the built-in synthesizer, read back with the `wave` module; finding and running a player."""

from __future__ import annotations

import shutil
import stat
import wave
from pathlib import Path

import mido
import numpy as np
import pytest

from musicgen.errors import AudioError
from musicgen.music import audio
from musicgen.music.audio import AudioResult, default_soundfont, find_player, midi_to_wav, play
from musicgen.music.render import Performance, abc_to_midi

DATA = Path(__file__).parent / "data" / "render"
REEL = DATA / "fling_dang_reel_ryans.abc"  # 26 s
LONG_TUNE = DATA / "northern_lasses_oneills_1532.abc"  # 65 s


def _has_fluidsynth_library() -> bool:
    try:
        import fluidsynth  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


needs_library = pytest.mark.skipif(not _has_fluidsynth_library(), reason="no libfluidsynth")
needs_program = pytest.mark.skipif(shutil.which("fluidsynth") is None, reason="no fluidsynth CLI")


@pytest.fixture
def reel(tmp_path) -> tuple[Path, Performance]:
    midi_path = tmp_path / "reel.mid"
    return midi_path, abc_to_midi(REEL.read_text(), midi_path)


@pytest.fixture
def builtin_only(monkeypatch):
    """Pretend neither pyfluidsynth's library nor the fluidsynth program is installed."""
    monkeypatch.setattr(audio, "_fluidsynth_library", lambda *args: None)
    monkeypatch.setattr(audio, "_fluidsynth_command", lambda *args: None)


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getcomptype()) == (1, 2, "NONE")
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
        return frames / 32768.0, wav.getframerate()


def check_tune_audio(wav_path: Path, result: AudioResult, performance: Performance) -> None:
    samples, rate = read_wav(wav_path)
    seconds = len(samples) / rate
    assert rate == 44100
    assert seconds == pytest.approx(result.seconds)
    assert performance.duration <= seconds <= performance.duration + 0.5 + audio.RELEASE_SECONDS
    peak, rms = float(np.max(np.abs(samples))), float(np.sqrt(np.mean(samples**2)))
    assert peak == pytest.approx(result.peak, abs=1e-3)
    assert 0.5 < peak <= 1.0
    assert rms > 0.02
    # Sound all the way through, not just at the start: every 5 s stretch of the tune is audible.
    for start in range(0, int(performance.duration) - 5, 5):
        stretch = samples[start * rate : (start + 5) * rate]
        assert np.sqrt(np.mean(stretch**2)) > 0.01


def test_default_soundfont_is_pretty_midis_general_midi_font():
    path = default_soundfont()
    assert path.name == "TimGM6mb.sf2"
    assert path.is_file() and path.stat().st_size > 1_000_000


@needs_library
def test_fluidsynth_library_renders_a_real_tune(reel, tmp_path):
    midi_path, performance = reel
    result = midi_to_wav(midi_path, tmp_path / "reel.wav")
    assert (result.engine, result.notice) == ("fluidsynth", None)
    check_tune_audio(tmp_path / "reel.wav", result, performance)


@needs_program
def test_fluidsynth_program_renders_when_the_library_is_missing(reel, tmp_path, monkeypatch):
    monkeypatch.setattr(audio, "_fluidsynth_library", lambda *args: None)
    midi_path, performance = reel
    result = midi_to_wav(midi_path, tmp_path / "reel.wav")
    assert (result.engine, result.notice) == ("fluidsynth", None)
    check_tune_audio(tmp_path / "reel.wav", result, performance)


def test_builtin_synthesizer_renders_with_a_notice(reel, tmp_path, builtin_only):
    midi_path, performance = reel
    result = midi_to_wav(midi_path, tmp_path / "reel.wav")
    assert result.engine == "builtin"
    assert result.notice and "\n" not in result.notice and "fluidsynth" in result.notice
    check_tune_audio(tmp_path / "reel.wav", result, performance)


def _one_note_midi(path: Path, pitch: int = 69, seconds: float = 1.0) -> None:
    """A single note at 120 qpm (480 ticks a beat, so 960 ticks a second)."""
    track = mido.MidiTrack(
        [
            mido.Message("note_on", note=pitch, velocity=100, time=0),
            mido.Message("note_off", note=pitch, velocity=0, time=int(seconds * 960)),
        ]
    )
    midi = mido.MidiFile(ticks_per_beat=480)
    midi.tracks.append(track)
    midi.save(path)


def test_builtin_tone_has_harmonics_and_an_envelope(tmp_path, builtin_only):
    _one_note_midi(tmp_path / "a.mid")
    midi_to_wav(tmp_path / "a.mid", tmp_path / "a.wav", sample_rate=22050)
    samples, rate = read_wav(tmp_path / "a.wav")
    spectrum = np.abs(np.fft.rfft(samples[: rate // 2]))
    frequencies = np.fft.rfftfreq(rate // 2, 1 / rate)

    def level(hz: float) -> float:
        return float(spectrum[np.argmin(np.abs(frequencies - hz))])

    # Not a bare sine: the second and third harmonics of A440 are clearly there.
    assert level(880) > 0.2 * level(440) and level(1320) > 0.1 * level(440)
    # A short attack, a louder start than sustain, and silence after the release.
    envelope = [float(np.sqrt(np.mean(samples[i : i + 220] ** 2))) for i in (0, 1100, 11000)]
    assert envelope[0] < envelope[1] and envelope[1] > envelope[2] > 0.05
    assert np.max(np.abs(samples[int(1.5 * rate) :])) < 0.01


def test_a_one_minute_tune_renders_whole(tmp_path):
    # How fast is bench/first_tunes.py's question; here: all 65 s of it, audible throughout.
    midi_path = tmp_path / "long.mid"
    performance = abc_to_midi(LONG_TUNE.read_text(), midi_path)
    assert performance.duration > 60
    result = midi_to_wav(midi_path, tmp_path / "long.wav")
    check_tune_audio(tmp_path / "long.wav", result, performance)


def test_builtin_one_minute_tune_renders_whole(tmp_path, builtin_only):
    midi_path = tmp_path / "long.mid"
    performance = abc_to_midi(LONG_TUNE.read_text(), midi_path)
    result = midi_to_wav(midi_path, tmp_path / "long.wav")
    assert result.engine == "builtin"
    check_tune_audio(tmp_path / "long.wav", result, performance)


def test_explicit_soundfont_and_sample_rate(reel, tmp_path):
    midi_path, performance = reel
    soundfont = tmp_path / "font.sf2"
    shutil.copy(default_soundfont(), soundfont)
    result = midi_to_wav(midi_path, tmp_path / "reel.wav", soundfont=soundfont, sample_rate=22050)
    samples, rate = read_wav(tmp_path / "reel.wav")
    assert rate == 22050 and result.seconds == pytest.approx(len(samples) / rate)


def test_midi_without_notes_gives_silence(tmp_path):
    midi = mido.MidiFile()
    midi.tracks.append(mido.MidiTrack([mido.MetaMessage("end_of_track", time=0)]))
    midi.save(tmp_path / "empty.mid")
    result = midi_to_wav(tmp_path / "empty.mid", tmp_path / "empty.wav")
    samples, _ = read_wav(tmp_path / "empty.wav")
    assert result.peak == 0.0 and not samples.any()


@pytest.mark.parametrize("problem", ["missing midi", "garbage midi", "missing soundfont", "rate"])
def test_bad_inputs_raise_audio_error(problem, reel, tmp_path):
    midi_path, _ = reel
    arguments = {"midi_path": midi_path, "wav_path": tmp_path / "out.wav"}
    if problem == "missing midi":
        arguments["midi_path"] = tmp_path / "nothing.mid"
    elif problem == "garbage midi":
        arguments["midi_path"] = tmp_path / "garbage.mid"
        arguments["midi_path"].write_bytes(b"MThd this is not a MIDI file")
    elif problem == "missing soundfont":
        arguments["soundfont"] = tmp_path / "nothing.sf2"
    else:
        arguments["sample_rate"] = 100
    with pytest.raises(AudioError):
        midi_to_wav(**arguments)
    assert not (tmp_path / "out.wav").exists()


# ------------------------------------------------------------------------------------------------
# Players


def _fake_programs(folder: Path, names: dict[str, int]) -> None:
    """Executables that exit with the given status, standing in for real players."""
    for name, status in names.items():
        program = folder / name
        program.write_text(f"#!/bin/sh\nexit {status}\n")
        program.chmod(program.stat().st_mode | stat.S_IEXEC)


def test_find_player_picks_a_wav_player_and_a_midi_player(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_player(".wav") is None and find_player(".mid") is None
    _fake_programs(tmp_path, {"aplay": 0, "timidity": 0})
    assert find_player(".wav") == [str(tmp_path / "aplay"), "-q"]
    assert find_player(".mid") == [str(tmp_path / "timidity"), "-q"]
    _fake_programs(tmp_path, {"paplay": 0})
    assert find_player() == [str(tmp_path / "paplay")]


def test_play_runs_the_player(reel, tmp_path, monkeypatch):
    midi_path, _ = reel
    monkeypatch.setenv("PATH", str(tmp_path))
    _fake_programs(tmp_path, {"timidity": 0})
    assert play(midi_path) is None


def test_play_reports_a_failing_player(reel, tmp_path, monkeypatch):
    midi_path, _ = reel
    monkeypatch.setenv("PATH", str(tmp_path))
    _fake_programs(tmp_path, {"timidity": 3})
    with pytest.raises(AudioError, match="timidity"):
        play(midi_path)


def test_play_without_a_player_says_where_the_file_is(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    wav_path = tmp_path / "tune.wav"
    with wave.open(str(wav_path), "wb") as wav:  # a real, silent WAV: play reads it first
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(b"\0\0" * 800)
    message = play(wav_path)
    assert message and str(wav_path) in message and "\n" not in message


def test_play_a_missing_file_raises(tmp_path):
    with pytest.raises(AudioError):
        play(tmp_path / "nothing.wav")
