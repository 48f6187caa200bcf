"""Writes generated tunes to disk as .abc, .mid and .wav, and says which of them really play."""

from __future__ import annotations

import errno
import json
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from musicgen.errors import MusicgenError, RenderError
from musicgen.files import Publisher, atomic_write_text, safe_stem
from musicgen.music.abc import header_fields

OUTPUT_SUFFIXES = (".abc", ".mid", ".wav", ".svg")
# TuneRecord's path of each
_RECORD_FIELDS = {".abc": "abc", ".mid": "midi", ".wav": "wav", ".svg": "svg"}


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
    svg: str = ""  # the sheet music, "" when not asked for or not engraved
    score_reason: str = ""  # why the tune has no sheet music; "" when engraved or not asked for


def write_tunes(
    texts: list[str],
    out_dir: Path,
    *,
    soundfont: Path | None = None,
    audio: bool = True,
    force: bool = False,
    score: bool = True,
) -> tuple[list[TuneRecord], list[str]]:
    """Writes each tune's ABC and, with `score`, its sheet music (SVG); for tunes that render, its
    MIDI and WAV. A tune the engraver fails on keeps its other files (`score_reason` says why).

    File names come from the tune's title made safe (see `musicgen.files.safe_stem`); an existing
    file is not overwritten unless `force`: the stem gets a `-2`, `-3`... suffix instead, chosen
    exclusively (see `musicgen.files.Publisher`), so a second process writing into `out_dir` at
    the same moment never replaces a file. Tunes of one call never overwrite each other, `force`
    or not. An interrupted call leaves only whole tunes behind.

    Returns:
        One record per tune, and the distinct one-line notices the audio engine gave (for
        example how to get a better synthesizer).

    Raises:
        MusicgenError: `out_dir` exists and is not a folder, or cannot be written.
    """
    out_dir = check_output_folder(out_dir)
    records, notices = [], []
    scores = _engrave(texts, score)
    with Publisher(out_dir, OUTPUT_SUFFIXES, force=force) as publisher:
        for index, (text, sheet) in enumerate(zip(texts, scores), start=1):
            record = _new_record(index, text)
            stem = safe_stem(record.title, f"tune-{index}")
            abc_path = publisher.stage(stem, ".abc")
            atomic_write_text(abc_path, text if text.endswith("\n") else text + "\n")
            staged = [abc_path, *_render(record, text, publisher, stem, soundfont, audio, notices)]
            staged += _stage_score(record, sheet, publisher, stem)
            _fill_paths(record, publisher.publish(stem, staged))
            records.append(record)
    return records, notices


def render_abc_file(
    abc_file: Path,
    out_dir: Path | None = None,
    *,
    soundfont: Path | None = None,
    audio: bool = True,
    force: bool = False,
    score: bool = True,
    transpose: int = 0,
) -> tuple[list[TuneRecord], list[str]]:
    """Renders every tune of an ABC file to MIDI (and WAV, and with `score` an SVG score) in
    `out_dir`, default beside the file.

    A one-tune file gives `NAME.mid`; a tunebook gives `NAME-TITLE.mid` per tune. Existing files
    are kept unless `force`: new names get a `-2`, `-3`... suffix, chosen exclusively. With
    `transpose` (semitones, see `musicgen.music.transpose`), each tune is moved first and its files
    are named `...-up2` / `...-down3`; a tune that cannot be moved (it would leave MIDI's range) is
    not rendered and its record says why.
    """
    from musicgen.errors import CorpusError, ParseError
    from musicgen.music.abc import read_text_file, split_tunebook

    abc_file = Path(abc_file)
    if not abc_file.exists():
        raise CorpusError(f"{abc_file}: no such file; pass the path of an .abc file")
    if not abc_file.is_file():
        raise CorpusError(f"{abc_file}: not a regular file; pass the path of an .abc file")
    try:
        tunes, errors = split_tunebook(read_text_file(abc_file), str(abc_file))
    except ParseError as exc:
        raise CorpusError(str(exc)) from None
    if not tunes:
        first = f" ({errors[0]})" if errors else ""
        raise CorpusError(f"{abc_file}: no tune with a K: field and notes found{first}")
    out_dir = check_output_folder(out_dir if out_dir is not None else abc_file.parent)
    records, notices = [], []
    if errors:
        reasons = Counter(error.reason for error in errors)
        counts = ", ".join(f"{reason} {n}" for reason, n in sorted(reasons.items()))
        notices.append(f"{abc_file}: skipped {len(errors)} unusable tune(s) ({counts})")
    rendered_suffixes = tuple(s for s in OUTPUT_SUFFIXES if s != ".abc")
    texts, unmoved = _transposed([tune.text for tune in tunes], transpose)
    scores = _engrave(texts, score)
    with Publisher(out_dir, rendered_suffixes, force=force) as publisher:
        for index, (tune, text, sheet) in enumerate(zip(tunes, texts, scores), start=1):
            record = _new_record(index, text)
            stem = abc_file.stem
            if len(tunes) > 1:
                stem = f"{stem}-{safe_stem(tune.title, str(index))}"
            if transpose:
                stem += f"-{'up' if transpose > 0 else 'down'}{abs(transpose)}"
            stem = safe_stem(stem)
            record.abc = str(abc_file)
            if index - 1 in unmoved:
                record.reason = unmoved[index - 1]
                records.append(record)
                continue
            staged = _render(record, text, publisher, stem, soundfont, audio, notices)
            staged += _stage_score(record, sheet, publisher, stem)
            if staged:
                _fill_paths(record, publisher.publish(stem, staged))
            records.append(record)
    return records, notices


def _transposed(texts: list[str], semitones: int) -> tuple[list[str], dict[int, str]]:
    """Each text moved by `semitones`, and {index: why} for those that cannot be (kept as read)."""
    from musicgen.music.transpose import transpose_tune

    moved, unmoved = [], {}
    for index, text in enumerate(texts):
        try:
            moved.append(transpose_tune(text, semitones))
        except RenderError as exc:
            moved.append(text)
            unmoved[index] = f"cannot transpose by {semitones}: {exc}"
    return moved, unmoved


def check_output_folder(out_dir: Path, *, create: bool = True) -> Path:
    """Makes sure files can be written into the output folder, creating it if `create`.

    Called with `create=False` before any work (sampling, rendering), so a bad `--out` is said at
    once and nothing is made when the command then fails for another reason.

    Raises:
        MusicgenError: the path (or the nearest existing folder above it) is a file, or cannot be
            written.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise MusicgenError(f"{out_dir}: is a file, not a folder; pass a folder to --out")
    existing = out_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f"{existing} is a file")
        if create:
            out_dir.mkdir(parents=True, exist_ok=True)
            existing = out_dir
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise MusicgenError(
            f"{out_dir}: cannot write files there ({exc.strerror or exc}); pass a writable folder "
            "to --out"
        ) from None
    return out_dir


def _engrave(texts: list[str], score: bool) -> list:
    """Each tune's ScoreResult (one round trip to the engraver's worker); None without `score`."""
    if not score:
        return [None] * len(texts)
    from musicgen.music.score import engrave

    return engrave(texts)


def _stage_score(record: TuneRecord, sheet, publisher, stem: str) -> list[Path]:
    """Stages the tune's SVG; without one, says why in `record.score_reason`."""
    if sheet is None:
        return []
    if sheet.svg is None:
        record.score_reason = sheet.reason
        return []
    svg_path = publisher.stage(stem, ".svg")
    atomic_write_text(svg_path, sheet.svg)
    return [svg_path]


def _fill_paths(record: TuneRecord, published: dict[str, Path]) -> None:
    for suffix, path in published.items():
        setattr(record, _RECORD_FIELDS[suffix], str(path))


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


def _render(record, text, publisher, stem: str, soundfont, audio: bool, notices) -> list[Path]:
    """Renders `text`'s MIDI (and WAV) into `publisher`'s staging folder and fills `record`.

    Returns:
        The staged files; none when the tune does not render (`record.reason` says why).
    """
    from musicgen.music import audio as audio_module
    from musicgen.music import render

    midi_path = publisher.stage(stem, ".mid")
    try:
        performance = render.abc_to_midi(text, midi_path)
    except RenderError as exc:
        record.reason = str(exc)
        return []
    record.valid = True
    record.notes = len(performance.notes)
    record.seconds = round(performance.duration, 2)
    if not audio:
        return [midi_path]
    wav_path = publisher.stage(stem, ".wav")
    try:
        result = audio_module.midi_to_wav(midi_path, wav_path, soundfont=soundfont)
    except MusicgenError as exc:
        notices.append(f"{stem}.wav: no audio ({exc})")
        return [midi_path]
    record.audio_engine = result.engine
    if result.notice and result.notice not in notices:
        notices.append(result.notice)
    return [midi_path, wav_path]


def format_table(records: list[TuneRecord]) -> str:
    """A plain-text table: one row per tune, then how many are valid."""
    header = ("#", "title", "key", "meter", "chars", "notes", "secs", "score", "valid")
    rows = [
        (
            str(r.index),
            (r.title or "(untitled)")[:32],
            r.key[:10],
            r.meter[:6],
            str(r.characters),
            str(r.notes),
            f"{r.seconds:.1f}",
            "yes" if r.svg else (f"no: {r.score_reason}"[:30] if r.score_reason else "-"),
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
