"""One request's model work, run in the worker thread: the calls `musicgen generate` makes, then
the checks, the sheet music and the nearest training tune, gathered into what the page shows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from musicgen.config import SampleConfig
from musicgen.errors import GenerationError, RenderError
from musicgen.web.choices import ModelChoice
from musicgen.web.forms import FieldError, GenerateRequest

WARM_UP = SampleConfig(num=1, max_length=16)


@dataclass
class LoadedModel:
    """A model loaded once, with what the page needs beside it.

    Attributes:
        choice: which model this is.
        generator: a `musicgen.generation.generate.Generator` (its compiled loops are reused by
        every batch). known: the keys, meters and tune types of the model's training tunes
            (`musicgen.data.controls.KnownHeaders`).
        train_texts: the training tunes, for the nearest-tune search; empty when the run's corpus
            cannot be read any more.
        index: a `musicgen.evaluation.novelty.NoveltyIndex` of them, or None.
        config: the run's `RunConfig` (a `common_root` model's tunes are moved home).
    """

    choice: ModelChoice
    generator: object
    known: object
    train_texts: tuple[str, ...]
    index: object | None
    config: object = None


def load_choice(choice: ModelChoice, warn=print) -> LoadedModel:
    """Loads a run's model, indexes its training tunes and compiles the sampler once.

    Raises:
        CheckpointError: the run cannot be loaded.
    """
    from musicgen.data.controls import known_headers
    from musicgen.generation.generate import Generator
    from musicgen.runs.checkpoint import load_for_inference

    # The run's best checkpoint, as `musicgen generate` loads it.
    model, vocab, config = load_for_inference(choice.run_dir, warn=warn, checkpoint="best")
    generator = Generator(model, vocab)
    train_texts, index = _training_index(config, warn)
    warm_seed = "X:1\n" if not vocab.unknown_characters("X:1\n") else ""
    generator.generate(warm_seed, WARM_UP)  # traces the priming pass and the decode loop
    known = known_headers(choice.run_dir)
    return LoadedModel(choice, generator, known, train_texts, index, config)


def _training_index(config, warn):
    """The run's training tunes (as `train` split them) and their novelty index."""
    from musicgen.data.encoded import load_encoded_corpus
    from musicgen.errors import MusicgenError
    from musicgen.evaluation.checks import read_written
    from musicgen.evaluation.novelty import NoveltyIndex

    data = config.data
    try:
        corpus = load_encoded_corpus(list(data.paths) or None, fraction=data.validation_fraction)
    except (MusicgenError, OSError) as exc:
        warn(f"no nearest-tune search: the run's training tunes cannot be read ({exc})")
        return (), None
    texts = tuple(corpus.texts("train"))
    written = []
    for text in texts:
        try:
            written.append(read_written(text))
        except RenderError:
            written.append(None)
    index = NoveltyIndex(texts, written)
    index.shared("K:\n\x01", None)  # builds the tables of short shared runs now, not in a request
    return texts, index


# How the controls name a field in their messages (they speak to the command line).
_CONTROL_FIELDS = {"--key": "key", "--meter": "meter", "--type": "tune_type", "--title": "title"}
_CONTROL_WORDS = {"--key": "key", "--meter": "meter", "--type": "tune type", "--title": "title"}


def header_seed(known, request: GenerateRequest) -> str:
    """The header the key, meter, type and title controls build, then the opening.

    Args:
        known: the model's `musicgen.data.controls.KnownHeaders`.
        request: the checked request.

    Raises:
        FieldError: a value the model's training tunes never used, a clash with the opening's
            own header, or an opening of music without a key.
    """
    from musicgen.data.controls import build_seed

    try:
        return build_seed(
            key=request.key or None,
            meter=request.meter or None,
            tune_type=request.tune_type or None,
            title=request.title or None,
            seed_text=request.opening,
            known=known,
        )
    except GenerationError as exc:
        raise _field_error(str(exc)) from None


def _field_error(message: str) -> FieldError:
    """A controls error as the page shows it: next to its field, in the page's words."""
    field = next((f for option, f in _CONTROL_FIELDS.items() if message.startswith(option)), None)
    if field is None:
        field = "key" if "needs a key" in message else "opening"
    message = message.replace("--key (or put K: in the seed)", "a key (or put K: in the opening)")
    for option, word in _CONTROL_WORDS.items():
        message = message.replace(option, word)
    return FieldError(field, message.replace("the seed", "the opening"))


def seed_text(loaded: LoadedModel, request: GenerateRequest) -> str:
    """The text the model is primed with (see `header_seed`), checked against the model.

    Raises:
        FieldError: see `header_seed`; or characters the model's vocabulary lacks, or no room
            left under `max_length`.
    """
    vocab = loaded.generator.vocab
    for field in ("title", "tune_type", "opening"):
        unknown = vocab.unknown_characters(getattr(request, field))
        if unknown:
            shown = " ".join(unknown[:10])
            raise FieldError(field, f"characters this model never saw: {shown}")
    seed = header_seed(loaded.known, request)
    if len(seed) >= request.max_length:
        raise FieldError(
            "max_length", f"must exceed the opening and header ({len(seed)} characters)"
        )
    return seed


def make_batch(loaded: LoadedModel, request: GenerateRequest, folder: Path, url: str) -> dict:
    """Generates, writes and judges one batch of tunes.

    Args:
        loaded: the model.
        request: the checked request.
        folder: a new folder for this batch's files.
        url: the URL prefix the folder is served under (ends with "/").

    Returns:
        The JSON-ready batch: its seed, timings, and per tune what the page shows.

    Raises:
        FieldError: a value the model cannot use.
    """
    from musicgen.evaluation.evaluate import check_tunes
    from musicgen.generation.generate import generate_at_home
    from musicgen.generation.output import write_tunes

    started = time.perf_counter()
    seed = seed_text(loaded, request)
    texts = generate_at_home(
        loaded.generator, seed, request.sample_config(), loaded.config, loaded.choice.run_dir
    )
    sampled = time.perf_counter()
    records, notices = write_tunes(texts, folder, audio=True)
    scores = _scores(records, texts)
    checked = check_tunes(texts, use_abc2midi=False)
    tunes = [
        _tune(loaded, record, score, result, written, url)
        for record, score, result, written in zip(
            records, scores, checked.results, checked.written, strict=True
        )
    ]
    return {
        "model": loaded.choice.id,
        "seed": seed,
        "notices": notices,
        "seconds": {
            "sampling": round(sampled - started, 3),
            "total": round(time.perf_counter() - started, 3),
        },
        "tunes": tunes,
    }


def _scores(records, texts) -> list[dict]:
    """Each tune's sheet music: the SVG file name beside its .abc, or why there is none.

    `write_tunes` writes the SVG where it can; otherwise the tunes are engraved here (in the
    engraver's own worker process, so a crash of it cannot take the server down).
    """
    if records and hasattr(records[0], "svg"):
        return [
            {
                "svg": Path(r.svg).name if r.svg else None,
                "reason": "" if r.svg else (r.score_reason or "not engraved"),
            }
            for r in records
        ]
    try:
        from musicgen.music.score import engrave
    except ImportError:
        return [{"svg": None, "reason": "sheet music is not installed"} for _ in records]
    from musicgen.files import atomic_write_text

    scores = []
    for record, result in zip(records, engrave(texts), strict=True):
        if result.svg is None:
            scores.append({"svg": None, "reason": result.reason or "cannot be engraved"})
            continue
        path = Path(record.abc).with_suffix(".svg")
        atomic_write_text(path, result.svg)
        scores.append({"svg": path.name, "reason": ""})
    return scores


def _tune(loaded: LoadedModel, record, score: dict, result: dict, written, url: str) -> dict:
    text = Path(record.abc).read_text(encoding="utf-8")
    failed = [{"check": name, "reason": reason} for name, reason in result.items() if reason]
    files = {"abc": record.abc, "mid": record.midi, "wav": record.wav}
    links = {kind: url + Path(path).name for kind, path in files.items() if path}
    if score["svg"]:
        links["svg"] = url + score["svg"]
    return {
        "index": record.index,
        "title": record.title,
        "key": record.key,
        "meter": record.meter,
        "characters": record.characters,
        "notes": record.notes,
        "seconds": record.seconds,
        "valid": not failed,
        "failed": failed,
        "files": links,
        "score_reason": score["reason"],
        "abc": text,
        "nearest": _nearest(loaded, text, written),
    }


def _nearest(loaded: LoadedModel, text: str, written) -> dict | None:
    """The training tune sharing the longest run of body text, and that run."""
    from musicgen.evaluation.novelty import body
    from musicgen.music.abc import header_fields

    if loaded.index is None:
        return None
    shared = loaded.index.shared(text, written)
    if shared.nearest is None:
        return {"title": None, "chars": shared.chars, "bars": shared.bars, "phrase": ""}
    other = loaded.train_texts[shared.nearest]
    return {
        "title": header_fields(other).get("T", "").strip() or "(untitled)",
        "chars": shared.chars,
        "bars": shared.bars,
        "phrase": _shared_run(body(text), body(other), shared.chars),
    }


def _shared_run(ours: str, theirs: str, length: int) -> str:
    """The first `length` characters of `ours` found in `theirs` ("" if none: a hash collision).

    The index already knows the length, so this is a few hundred substring searches rather than
    a quadratic longest-common-substring search.
    """
    for start in range(len(ours) - length + 1):
        if ours[start : start + length] in theirs:
            return ours[start : start + length]
    return ""
