"""Writes generated tunes to disk as .abc, .mid and .wav, and says which of them really play."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from musicgen.abc import header_fields
from musicgen.errors import MusicgenError, RenderError
from musicgen.files import atomic_write_text, safe_stem

OUTPUT_SUFFIXES = (".abc", ".mid", ".wav")


@dataclass
class TuneRecord:
    """What happened to one generated tune."""

    index: int
    title: str
    key: str
    meter: str
    characters: int
    valid: bool
    reason: str  # why the tune is invalid; "" when valid
    notes: int = 0
    seconds: float = 0.0
    abc: str = ""
    midi: str = ""
    wav: str = ""
    audio_engine: str = ""


def write_tunes(
    texts: list[str],
    out_dir: Path,
    *,
    soundfont: Path | None = None,
    audio: bool = True,
    force: bool = False,
) -> tuple[list[TuneRecord], list[str]]:
    """Writes each tune's ABC, and for tunes that render, its MIDI and WAV.

    File names come from the tune's title made safe (see `musicgen.files.safe_stem`); an existing
    file is not overwritten unless `force`: the stem gets a `-2`, `-3`... suffix instead. Tunes of
    one call never overwrite each other, `force` or not.

    Returns:
        One record per tune, and the distinct one-line notices the audio engine gave (for
        example how to get a better synthesizer).

    Raises:
        MusicgenError: `out_dir` exists and is not a folder.
    """
    out_dir = _output_folder(out_dir)
    records, notices = [], []
    taken: set[str] = set()
    for index, text in enumerate(texts, start=1):
        record = _new_record(index, text)
        stem = safe_stem(record.title, f"tune-{index}")
        stem = _free_stem(out_dir, stem, OUTPUT_SUFFIXES, force, taken)
        abc_path = out_dir / f"{stem}.abc"
        atomic_write_text(abc_path, text if text.endswith("\n") else text + "\n")
        record.abc = str(abc_path)
        _render(record, text, out_dir / stem, soundfont, audio, notices)
        records.append(record)
    return records, notices


def render_abc_file(
    abc_file: Path,
    out_dir: Path | None = None,
    *,
    soundfont: Path | None = None,
    audio: bool = True,
    force: bool = False,
) -> tuple[list[TuneRecord], list[str]]:
    """Renders every tune of an ABC file to MIDI (and WAV) in `out_dir`, default beside the file.

    A one-tune file gives `NAME.mid`; a tunebook gives `NAME-TITLE.mid` per tune. Existing files
    are kept unless `force`: new names get a `-2`, `-3`... suffix.
    """
    from musicgen.abc import read_text_file, split_tunebook
    from musicgen.errors import CorpusError, ParseError

    abc_file = Path(abc_file)
    if not abc_file.is_file():
        raise CorpusError(f"{abc_file}: no such file; pass the path of an .abc file")
    try:
        tunes, errors = split_tunebook(read_text_file(abc_file), str(abc_file))
    except ParseError as exc:
        raise CorpusError(str(exc)) from None
    if not tunes:
        first = f" ({errors[0]})" if errors else ""
        raise CorpusError(f"{abc_file}: no tune with a K: field and notes found{first}")
    out_dir = _output_folder(out_dir if out_dir is not None else abc_file.parent)
    records, notices = [], []
    if errors:
        reasons = Counter(error.reason for error in errors)
        counts = ", ".join(f"{reason} {n}" for reason, n in sorted(reasons.items()))
        notices.append(f"{abc_file}: skipped {len(errors)} unusable tune(s) ({counts})")
    taken: set[str] = set()
    for index, tune in enumerate(tunes, start=1):
        record = _new_record(index, tune.text)
        stem = abc_file.stem
        if len(tunes) > 1:
            stem = f"{stem}-{safe_stem(tune.title, str(index))}"
        stem = _free_stem(out_dir, safe_stem(stem), (".mid", ".wav"), force, taken)
        record.abc = str(abc_file)
        _render(record, tune.text, out_dir / stem, soundfont, audio, notices)
        records.append(record)
    return records, notices


def _output_folder(out_dir: Path) -> Path:
    """Creates the output folder if needed; a clear error when the path is a file."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise MusicgenError(f"{out_dir}: is a file, not a folder; pass a folder to --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def _free_stem(folder: Path, stem: str, suffixes, force: bool, taken: set[str]) -> str:
    """`stem`, or `stem-2`... so no file of `folder` (unless `force`) nor of `taken` is reused.

    With `force`, the chosen stem's old files are removed, so no stale `.mid` or `.wav` is left
    beside a new tune that does not render.
    """
    candidate, n = stem, 1
    while candidate.lower() in taken or (
        not force and any((folder / f"{candidate}{suffix}").exists() for suffix in suffixes)
    ):
        n += 1
        candidate = f"{stem}-{n}"
    taken.add(candidate.lower())
    if force:
        for suffix in suffixes:
            old = folder / f"{candidate}{suffix}"
            if old.is_file() or old.is_symlink():
                old.unlink()
    return candidate


def _new_record(index: int, text: str) -> TuneRecord:
    fields = header_fields(text)
    return TuneRecord(
        index=index,
        title=fields.get("T", "").strip(),
        key=fields.get("K", "").strip(),
        meter=fields.get("M", "").strip(),
        characters=len(text),
        valid=False,
        reason="",
    )


def _render(record, text, base: Path, soundfont, audio: bool, notices: list[str]) -> None:
    """Fills `record` with the MIDI (and WAV) written at `base` + suffix, or why it is invalid."""
    from musicgen import audio as audio_module
    from musicgen import render

    midi_path = base.with_name(base.name + ".mid")
    try:
        performance = render.abc_to_midi(text, midi_path)
    except RenderError as exc:
        record.reason = str(exc)
        return
    record.valid = True
    record.midi = str(midi_path)
    record.notes = len(performance.notes)
    record.seconds = round(performance.duration, 2)
    if not audio:
        return
    wav_path = base.with_name(base.name + ".wav")
    try:
        result = audio_module.midi_to_wav(midi_path, wav_path, soundfont=soundfont)
    except MusicgenError as exc:
        notices.append(f"{wav_path.name}: no audio ({exc})")
        return
    record.wav = str(wav_path)
    record.audio_engine = result.engine
    if result.notice and result.notice not in notices:
        notices.append(result.notice)


def format_table(records: list[TuneRecord]) -> str:
    """A plain-text table: one row per tune, then how many are valid."""
    header = ("#", "title", "key", "meter", "chars", "notes", "secs", "valid")
    rows = [
        (
            str(r.index),
            (r.title or "(untitled)")[:32],
            r.key[:10],
            r.meter[:6],
            str(r.characters),
            str(r.notes),
            f"{r.seconds:.1f}",
            "yes" if r.valid else f"no: {r.reason}"[:70],
        )
        for r in records
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows]
    ]
    valid = sum(r.valid for r in records)
    lines.append(f"{valid} of {len(records)} tunes are valid and rendered")
    return "\n".join(lines)


def records_json(records: list[TuneRecord]) -> str:
    """One JSON object per line, one line per tune."""
    return "\n".join(json.dumps(asdict(r), sort_keys=True) for r in records)
