"""MIDI -> WAV, and playing a file on this machine.

FluidSynth with a General MIDI SoundFont gives real instrument sound: first through pyfluidsynth
(in-process, via pretty_midi), else through the `fluidsynth` command line. Where neither exists, a
small built-in synthesizer (NumPy: a few harmonics under an attack/decay envelope, like a bowed
string) still writes listenable audio, and the result carries a one-line notice saying how to get
the better sound. Every engine's output is cut or padded to the last note-off plus one second,
normalised to about -1 dBFS (TimGM6mb.sf2 is quiet) and written as 16-bit mono PCM with the
standard `wave` module, atomically.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import wave
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from musicgen.errors import AudioError, first_line
from musicgen.files import atomic_write_bytes

TARGET_PEAK = 10 ** (-1 / 20)  # -1 dBFS: loud, with a little headroom for players that resample
RELEASE_SECONDS = 1.0  # silence after the last note-off, so the last note rings out
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 8000, 192_000
BUILTIN_NOTICE = (
    "Audio made with the simple built-in synthesizer: for real instrument sound install FluidSynth "
    "(Debian/Ubuntu: apt-get install fluidsynth libfluidsynth3; macOS: brew install fluid-synth)."
)

# Players tried in order; the file's path is appended. Only the MIDI players read .mid files.
_WAV_PLAYERS = (
    ("paplay",),
    ("pw-play",),
    ("aplay", "-q"),
    ("afplay",),
    ("ffplay", "-nodisp", "-autoexit", "-loglevel", "quiet"),
    ("play", "-q"),
)
_MIDI_PLAYERS = (("timidity", "-q"),)

# Built-in synthesizer: relative loudness of the harmonics of a bowed string (roughly 1/k), the
# attack and decay that keep it from sounding like a bare sine, and the release after a note-off.
_HARMONICS = (1.0, 0.5, 0.33, 0.25, 0.16, 0.12, 0.08)
_ATTACK, _DECAY, _SUSTAIN, _RELEASE = 0.015, 0.12, 0.55, 0.12  # seconds, seconds, level, seconds


@dataclass(frozen=True)
class AudioResult:
    """What `midi_to_wav` wrote.

    Attributes:
        engine: "fluidsynth" or "builtin".
        seconds: Length of the WAV file.
        peak: Largest absolute sample, 0..1, after normalisation (0 for silence).
        notice: One line for the user when the built-in synthesizer was used, else None.
    """

    engine: str
    seconds: float
    peak: float
    notice: str | None


def default_soundfont() -> Path:
    """pretty_midi's General MIDI SoundFont, TimGM6mb.sf2, inside the installed package."""
    return Path(str(resources.files("pretty_midi") / "TimGM6mb.sf2"))


def midi_to_wav(
    midi_path: str | Path,
    wav_path: str | Path,
    soundfont: str | Path | None = None,
    sample_rate: int = 44100,
) -> AudioResult:
    """Synthesizes a MIDI file to a 16-bit mono WAV file.

    Args:
        midi_path: The MIDI file to play.
        wav_path: Where to write the WAV; its folder must exist. Written atomically.
        soundfont: A .sf2 SoundFont for FluidSynth; None for `default_soundfont()`.
        sample_rate: Samples per second, 8000-192000.

    Returns:
        The engine used, the length, the peak level and any notice for the user.

    Raises:
        AudioError: The MIDI file is missing or unreadable, the SoundFont file is missing or cannot
            be loaded, or the sample rate is out of range.
    """
    midi_path, sf2 = Path(midi_path), Path(soundfont) if soundfont else default_soundfont()
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise AudioError(f"sample rate {sample_rate} is outside {MIN_SAMPLE_RATE}-192000")
    midi = _read_midi(midi_path)
    if not sf2.is_file():
        raise AudioError(f"SoundFont not found: {sf2}")
    samples, engine, notice = _synthesize(midi, midi_path, sf2, sample_rate)
    samples = _fit_length(samples, midi.get_end_time() + RELEASE_SECONDS, sample_rate)
    samples, peak = _normalise(samples)
    _write_wav(Path(wav_path), samples, sample_rate)
    return AudioResult(engine, len(samples) / sample_rate, peak, notice)


def check_soundfont(path: str | Path) -> None:
    """Makes sure `path` is a SoundFont FluidSynth can load, before any work is done with it.

    Raises:
        AudioError: naming the file and what to do: missing, not a regular file, not a RIFF
            `sfbk` (SoundFont 2) file, cut short, or refused by FluidSynth.
    """
    path = Path(path)
    hint = "pass a General MIDI .sf2 file to --soundfont"
    if not path.exists():
        raise AudioError(f"{path}: no such SoundFont file; {hint}")
    if not path.is_file():
        raise AudioError(f"{path}: not a regular file; {hint}")
    with open(path, "rb") as handle:
        head = handle.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"sfbk":
        raise AudioError(f"{path}: not a SoundFont 2 file; {hint}")
    if int.from_bytes(head[4:8], "little") + 8 > path.stat().st_size:
        raise AudioError(f"{path}: the SoundFont is cut short; {hint}")
    try:
        import fluidsynth

        synth = fluidsynth.Synth(samplerate=44100.0)
    except (ImportError, OSError, AttributeError):
        return  # the header is all that can be checked without the library
    try:
        with quiet_c_stderr():
            loaded = synth.sfload(str(path))
        if loaded == -1:
            raise AudioError(f"{path}: FluidSynth cannot load this SoundFont; {hint}")
    finally:
        synth.delete()


@contextlib.contextmanager
def quiet_c_stderr():
    """Sends what C libraries (FluidSynth, libinstpatch) print to file descriptor 2 to nowhere.

    Their lines mean nothing to a user; failures are reported through return values instead.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _read_midi(path: Path):
    import pretty_midi  # about 0.3 s to import: only when audio is wanted

    if not path.is_file():
        raise AudioError(f"MIDI file not found: {path}")
    try:
        return pretty_midi.PrettyMIDI(str(path))
    except Exception as exc:  # mido and pretty_midi raise many kinds for a damaged file
        raise AudioError(f"cannot read MIDI file {path}: {exc}") from exc


def _synthesize(midi, midi_path: Path, sf2: Path, sample_rate: int):
    """(mono float samples, engine, notice): FluidSynth in-process, its program, or built-in."""
    samples = _fluidsynth_library(midi, sf2, sample_rate)
    if samples is None:
        samples = _fluidsynth_command(midi_path, sf2, sample_rate)
    if samples is not None:
        return samples, "fluidsynth", None
    return _builtin(midi, sample_rate), "builtin", BUILTIN_NOTICE


def _fluidsynth_library(midi, sf2: Path, sample_rate: int) -> np.ndarray | None:
    """pyfluidsynth through pretty_midi; None when pyfluidsynth or libfluidsynth is missing."""
    try:
        import fluidsynth  # raises ImportError when the system library is missing

        synth = fluidsynth.Synth(samplerate=float(sample_rate))
    except (ImportError, OSError, AttributeError):  # AttributeError: an old library lacks a call
        return None
    try:
        with quiet_c_stderr():
            sfid = synth.sfload(str(sf2))
        if sfid == -1:
            raise AudioError(f"{sf2}: FluidSynth cannot load this SoundFont; pass another .sf2")
        if not any(instrument.notes for instrument in midi.instruments):
            return np.zeros(0)
        with quiet_c_stderr():
            return midi.fluidsynth(fs=sample_rate, synthesizer=synth, sfid=sfid, normalize=False)
    finally:
        synth.delete()


def _fluidsynth_command(midi_path: Path, sf2: Path, sample_rate: int) -> np.ndarray | None:
    """The `fluidsynth` program rendering to a file; None when it is not installed."""
    program = shutil.which("fluidsynth")
    if program is None:
        return None
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "out.wav"
        command = [program, "-ni", "-g", "1.0", "-r", str(sample_rate), "-T", "wav", "-O", "s16",
                   "-F", str(out), str(sf2), str(midi_path)]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
        if result.returncode != 0 or not out.is_file():
            last_line = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            raise AudioError(f"fluidsynth failed on {midi_path.name}: {last_line[0]}")
        samples, _ = _read_wav(out)
    return samples


def _builtin(midi, sample_rate: int) -> np.ndarray:
    """Additive synthesis of every non-drum note: harmonics under an attack/decay/release."""
    notes = [note for inst in midi.instruments if not inst.is_drum for note in inst.notes]
    end = max((note.end for note in notes), default=0.0)
    out = np.zeros(int((end + RELEASE_SECONDS) * sample_rate) + 1)
    for note in notes:
        tone = _builtin_note(note.pitch, note.end - note.start, note.velocity, sample_rate)
        start = int(note.start * sample_rate)
        length = min(len(tone), len(out) - start)
        out[start : start + length] += tone[:length]
    return out


def _builtin_note(pitch: int, seconds: float, velocity: int, sample_rate: int) -> np.ndarray:
    frequency = 440.0 * 2 ** ((pitch - 69) / 12)
    t = np.arange(int((seconds + _RELEASE) * sample_rate)) / sample_rate  # (samples,)
    tone = np.zeros_like(t)
    for number, amplitude in enumerate(_HARMONICS, start=1):
        if number * frequency < sample_rate / 2:  # harmonics above Nyquist would alias
            tone += amplitude * np.sin(2 * np.pi * number * frequency * t)
    attack = np.clip(t / _ATTACK, 0.0, 1.0)
    decay = _SUSTAIN + (1 - _SUSTAIN) * np.exp(-np.maximum(t - _ATTACK, 0.0) / _DECAY)
    release = np.exp(-np.maximum(t - seconds, 0.0) / (_RELEASE / 4))
    return tone * attack * decay * release * (velocity / 127) * 0.2


def _fit_length(samples: np.ndarray, seconds: float, sample_rate: int) -> np.ndarray:
    """Cuts or pads to `seconds` (every engine then gives the same length) and fades the last 20 ms
    so a cut never clicks."""
    length = max(int(round(seconds * sample_rate)), 1)
    fitted = np.zeros(length)
    fitted[: min(length, len(samples))] = samples[:length]
    fade = min(length, int(0.02 * sample_rate))
    fitted[length - fade :] *= np.linspace(1.0, 0.0, fade)
    return fitted


def _normalise(samples: np.ndarray) -> tuple[np.ndarray, float]:
    """Scales the peak to TARGET_PEAK; silence stays silence."""
    samples = np.nan_to_num(np.asarray(samples, dtype=np.float64))
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    if peak == 0.0:
        return samples, 0.0
    return samples * (TARGET_PEAK / peak), TARGET_PEAK


def _write_wav(path: Path, samples: np.ndarray, sample_rate: int) -> None:
    pcm = np.round(np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm.tobytes())
    atomic_write_bytes(path, buffer.getvalue())


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    """A 16-bit PCM WAV as mono floats in -1..1, and its sample rate."""
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise AudioError(f"{path.name}: expected 16-bit samples, got {8 * wav.getsampwidth()}")
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
        channels, rate = wav.getnchannels(), wav.getframerate()
    return frames.reshape(-1, channels).mean(axis=1) / 32768.0, rate


def find_player(suffix: str = ".wav") -> list[str] | None:
    """A command that plays a file of this kind here (the path goes last), or None.

    Args:
        suffix: ".wav" (paplay, pw-play, aplay, afplay, ffplay, sox's play) or ".mid"/".midi"
            (timidity, or the fluidsynth program with the default SoundFont).

    Returns:
        The command as a list, e.g. ["/usr/bin/aplay", "-q"], or None when nothing here plays it.
    """
    if suffix.lower() in (".mid", ".midi"):
        for candidate in _MIDI_PLAYERS:
            if program := shutil.which(candidate[0]):
                return [program, *candidate[1:]]
        if program := shutil.which("fluidsynth"):
            return [program, "-ni", str(default_soundfont())]
        return None
    for candidate in _WAV_PLAYERS:
        if program := shutil.which(candidate[0]):
            return [program, *candidate[1:]]
    return None


def play(path: str | Path) -> str | None:
    """Plays a WAV or MIDI file through `find_player`, waiting until it ends.

    Args:
        path: The file to play.

    Returns:
        None when it played; when this machine has no player, a message with the file's path and
        how to play it.

    Raises:
        AudioError: The file is missing, or the player failed.
    """
    path = Path(path)
    _check_playable(path)
    command = find_player(path.suffix)
    if command is None:
        return _no_player_message(path)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C stops the tune, not the program
        result = subprocess.run([*command, str(path)], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            raise AudioError(f"{Path(command[0]).name} could not play {path}: {detail[0]}")
    return None


def _check_playable(path: Path) -> None:
    """Raises AudioError unless `path` is a regular WAV or MIDI file that reads as one."""
    if not path.exists():
        raise AudioError(f"no such file to play: {path}")
    if not path.is_file():
        raise AudioError(f"{path}: not a regular file; pass a .wav or .mid file to play")
    suffix = path.suffix.lower()
    if suffix not in (".wav", ".mid", ".midi"):
        hint = "; make one with `musicgen render` first" if suffix == ".abc" else ""
        raise AudioError(f"{path}: play takes .wav, .mid or .midi files{hint}")
    try:
        if suffix == ".wav":
            with wave.open(str(path), "rb") as wav:
                wav.getnframes()
        else:
            import mido

            mido.MidiFile(str(path))
    except Exception as exc:  # wave.Error, EOFError, mido's many kinds for a damaged file
        kind = "WAV" if suffix == ".wav" else "MIDI"
        raise AudioError(f"{path}: not a readable {kind} file ({first_line(exc)})") from None


def _no_player_message(path: Path) -> str:
    if sys.platform == "darwin":
        how = "open it with `open`, or install sox (brew install sox)"
    elif os.name == "nt":
        how = "open it in any media player"
    elif path.suffix.lower() in (".mid", ".midi"):
        how = "make a WAV with `musicgen render`, or install timidity (apt-get install timidity)"
    else:
        how = "open it in any media player, or install one (apt-get install alsa-utils for aplay)"
    return f"No audio player found on this machine. The file is {path}; {how}."
