"""How good a trained model is, in numbers: likelihood of real tunes, validity of generated ones
(each check beside its pass rate on real tunes), musical statistics and form
(`musicgen.evaluation.form`: endings, sections, bars) against the training corpus, and novelty.
`evaluate_run` returns one JSON-ready dict with stable keys; `musicgen.evaluation.report` draws the
page.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from musicgen.config import RunConfig, SampleConfig
from musicgen.data.vocab import BOS, EOS, PAD, UNK, Vocabulary
from musicgen.errors import CorpusError, RenderError
from musicgen.evaluation import checks, form, novelty, stats
from musicgen.tfsetup import import_tensorflow

tf = import_tensorflow()

LN2 = math.log(2.0)
SCORE_BATCH = 16  # tunes scored together
# Scored batches are padded to this many characters times a power of two, so that a handful of
# shapes is traced whatever the tunes' lengths.
LENGTH_BUCKET = 128


# ------------------------------------------------------------------------------------------------
# Likelihood


@dataclasses.dataclass(frozen=True)
class Likelihood:
    """Bits per character of real tunes, each read whole from the start-of-tune state.

    Attributes:
        tunes: tunes scored.
        characters: predictions scored: every known character of every tune and its end-of-tune.
        bits_per_char: mean negative log2-likelihood of those predictions.
        unknown_characters: characters outside the vocabulary (fed to the model as the unknown
            token, and their own prediction left out of the score).
        unknown_distinct: those characters, each once, in order of appearance.
        tunes_with_unknown: tunes holding at least one of them.
        as_written_bits_per_char: for a model trained with `common_root`, which reads every tune
            at root C, the bits per character of the tunes in their own keys: its bits on each
            tune at root C plus the bits of drawing the tune's root from the run's home keys
            (`keyroot.home_bits`), over the tunes' own characters and end-of-tune. This is the
            figure comparable with a model trained on the tunes as written; None otherwise.
    """

    tunes: int
    characters: int
    bits_per_char: float | None
    unknown_characters: int
    unknown_distinct: tuple[str, ...]
    tunes_with_unknown: int
    as_written_bits_per_char: float | None = None

    def with_home_keys(self, written_texts: Sequence[str], homes) -> Likelihood:
        """This likelihood, of tunes moved to root C, with the bits of the tunes as written
        (`written_texts`, the same tunes before they were moved)."""
        from musicgen.music.keyroot import home_bits

        if self.bits_per_char is None or not written_texts:
            return self
        bits, characters = home_bits(written_texts, homes)
        total = self.bits_per_char * self.characters + bits
        return dataclasses.replace(self, as_written_bits_per_char=total / characters)


def _scorer(model):
    @tf.function
    def nats(inputs, targets):
        logits = model.sequence_logits(inputs)  # (batch, time, vocab)
        per_char = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=targets, logits=tf.cast(logits, tf.float32)
        )  # (batch, time)
        scored = tf.logical_and(tf.not_equal(targets, PAD), tf.not_equal(targets, UNK))
        return tf.reduce_sum(tf.where(scored, per_char, 0.0)), tf.reduce_sum(
            tf.cast(scored, tf.float32)
        )

    return nats


def score_tunes(model, vocab: Vocabulary, texts: Sequence[str]) -> Likelihood:
    """Scores each text as BOS + text + EOS with `model.sequence_logits`.

    Args:
        model: a musicgen model.
        vocab: its vocabulary.
        texts: tunes' ABC texts.
    """
    unknown = Counter()
    tunes_with_unknown = 0
    rows = []
    for text in texts:
        missing = [c for c in text if c not in vocab]
        unknown.update(missing)
        tunes_with_unknown += bool(missing)
        rows.append([BOS, *vocab.encode(text, strict=False), EOS])
    nats = _scorer(model)
    total = count = 0.0
    rows.sort(key=len)
    for start in range(0, len(rows), SCORE_BATCH):
        batch = rows[start : start + SCORE_BATCH]
        width = LENGTH_BUCKET
        while width + 1 < max(map(len, batch)):
            width *= 2
        ids = np.full((SCORE_BATCH, width + 1), PAD, np.int32)  # all-PAD rows score nothing
        for i, row in enumerate(batch):
            ids[i, : len(row)] = row
        batch_nats, batch_count = nats(tf.constant(ids[:, :-1]), tf.constant(ids[:, 1:]))
        total, count = total + float(batch_nats), count + float(batch_count)
    return Likelihood(
        tunes=len(texts),
        characters=int(count),
        bits_per_char=total / count / LN2 if count else None,
        unknown_characters=sum(unknown.values()),
        unknown_distinct=tuple(unknown),
        tunes_with_unknown=tunes_with_unknown,
    )


# ------------------------------------------------------------------------------------------------
# Validity


@dataclasses.dataclass(frozen=True)
class Checked:
    """The checks of a set of tunes.

    Attributes:
        results: per tune, {check name: None if passed else reason}; "abc2midi" is there only
            when abc2midi is installed.
        written: per tune, the tune as written, None when it does not parse.
    """

    results: tuple[dict[str, str | None], ...]
    written: tuple[checks.WrittenTune | None, ...]

    @property
    def valid(self) -> list[bool]:
        """Per tune: passes every headline check."""
        return [all(r[name] is None for name in checks.HEADLINE_CHECKS) for r in self.results]

    def summary(self) -> dict:
        """Counts and pass rates, per check and for the headline (all headline checks)."""
        count = len(self.results)
        names = [*checks.HEADLINE_CHECKS]
        if self.results and checks.ABC2MIDI_CHECK in self.results[0]:
            names.append(checks.ABC2MIDI_CHECK)
        passed = {name: sum(r[name] is None for r in self.results) for name in names}
        valid = sum(self.valid)
        return {
            "tunes": count,
            "valid": valid,
            "valid_share": valid / count if count else None,
            "checks": {name: passed[name] / count if count else None for name in names},
            "abc2midi_installed": checks.ABC2MIDI_CHECK in names,
        }

    def failure_reasons(self, limit: int = 5) -> dict[str, dict[str, int]]:
        """The commonest reasons each check failed, by the reason's first words."""
        reasons: dict[str, Counter] = {}
        for result in self.results:
            for name, reason in result.items():
                if reason is not None:
                    reasons.setdefault(name, Counter())[_reason_key(reason)] += 1
        return {name: dict(counter.most_common(limit)) for name, counter in reasons.items()}


def _reason_key(reason: str) -> str:
    """A reason without its tune-specific numbers, so that like failures count together."""
    head = reason.split(" at line")[0].split(", e.g.")[0]
    return " ".join("N" if word.strip(",:").isdigit() else word for word in head.split())[:80]


def check_tunes(texts: Sequence[str], use_abc2midi: bool = True) -> Checked:
    """Runs every check (abc2midi too, when installed and asked for) on each text."""
    results, written = [], []
    for text in texts:
        result, tune = checks.check_tune(text)
        results.append(result)
        written.append(tune)
    errors = checks.abc2midi_errors(texts) if use_abc2midi else None
    if errors is not None:
        for result, error in zip(results, errors, strict=True):
            result[checks.ABC2MIDI_CHECK] = error
    return Checked(tuple(results), tuple(written))


# ------------------------------------------------------------------------------------------------
# The whole evaluation


@dataclasses.dataclass(frozen=True)
class Inputs:
    """What an evaluation reads.

    Attributes:
        scored_texts: real tunes to score (the run's validation tunes or --data).
        scored_source: where they come from, for the report.
        train_texts: the run's training tunes: the corpus for statistics, novelty and the
            real-tune check rates.
        validation_texts: the run's validation tunes (real tunes it never trained on), for the
            novelty baseline.
        scored_as_written: for a `common_root` run, the scored tunes as written, before they
            were moved to root C (the same tunes in the same order); empty otherwise.
    """

    scored_texts: tuple[str, ...]
    scored_source: str
    train_texts: tuple[str, ...]
    validation_texts: tuple[str, ...]
    scored_as_written: tuple[str, ...] = ()


def run_inputs(config: RunConfig, data_paths: Sequence[str | Path] = ()) -> Inputs:
    """The run's training and validation tunes, as training split them (read through the
    encoded cache, as written and without transposed copies: built once, then read in a fraction
    of a second), and the tunes to score: `data_paths` when given, else the validation tunes. For
    a run trained with `common_root`, each moved to root C as the model read them (one that cannot
    be is left out); the generated tunes are then judged as the model writes them, at root C,
    against these.

    Raises:
        CorpusError: the run's corpus or `data_paths` cannot be read or hold no tunes.
    """
    from musicgen.data.corpus import load_corpus
    from musicgen.data.encoded import load_encoded_corpus

    corpus = load_encoded_corpus(
        list(config.data.paths) or None, fraction=config.data.validation_fraction
    )
    train, validation = (list(corpus.texts(split)) for split in ("train", "validation"))
    if data_paths:
        scored = [tune.text for tune in load_corpus(list(data_paths))[0]]
        source = ", ".join(str(p) for p in data_paths)
    else:
        scored, source = validation, "the run's validation tunes"
    texts = [scored, train, validation]
    written: list[str] = []
    if config.data.common_root:  # what the model read: every tune at root C (`keyroot`)
        from musicgen.music.keyroot import movable_pairs

        written, texts[0] = movable_pairs(texts[0])
        texts[1:] = [movable_pairs(part)[1] for part in texts[1:]]
    if not texts[0]:
        raise CorpusError(f"no tunes to score in {source}")
    return Inputs(
        scored_texts=tuple(texts[0]),
        scored_source=source,
        train_texts=tuple(texts[1]),
        validation_texts=tuple(texts[2]),
        scored_as_written=tuple(written),
    )


def generate_tunes(model, vocab: Vocabulary, sample: SampleConfig) -> tuple[list[str], float]:
    """`sample.num` tunes from the start of tune; (texts, seconds)."""
    from musicgen.generation.generate import Generator

    started = time.perf_counter()
    texts = Generator(model, vocab).generate("", sample)
    return texts, time.perf_counter() - started


def evaluate_texts(
    generated: Sequence[str], inputs: Inputs, likelihood: Likelihood | None = None
) -> dict:
    """Validity, statistics, form and novelty of `generated` against the run's tunes, as a dict.

    Shared by `evaluate_run` and the time-to-quality benchmark, so both judge tunes alike.
    """
    started = time.perf_counter()
    ours = check_tunes(generated)
    real = check_tunes(inputs.train_texts)
    index = novelty.NoveltyIndex(inputs.train_texts, real.written)
    shared = [index.shared(text, tune) for text, tune in zip(generated, ours.written)]
    validation_written = [_written_or_none(text) for text in inputs.validation_texts]
    baseline = [index.shared(t, w) for t, w in zip(inputs.validation_texts, validation_written)]
    forms = [_form_or_none(text) for text in generated]
    result = {
        "likelihood": None if likelihood is None else dataclasses.asdict(likelihood),
        "validity": {
            "headline_checks": list(checks.HEADLINE_CHECKS),
            "generated": ours.summary(),
            "real": real.summary(),
            "generated_failures": ours.failure_reasons(),
            "real_failures": real.failure_reasons(),
        },
        "statistics": stats.compare([w for w in ours.written if w], [w for w in real.written if w]),
        "form": form.compare([f for f in forms if f], form.read_forms(inputs.train_texts)),
        "novelty": {
            "generated": novelty.summarise(shared),
            "validation_tunes": novelty.summarise(baseline),
        },
        "tunes": _tune_records(generated, ours, shared, forms, inputs),
    }
    result["seconds"] = {"judging": time.perf_counter() - started}
    return result


def _written_or_none(text: str) -> checks.WrittenTune | None:
    try:
        return checks.read_written(text)
    except RenderError:
        return None


def _form_or_none(text: str) -> form.TuneForm | None:
    try:
        return form.read_form(text)
    except RenderError:
        return None


def _tune_records(generated, checked: Checked, shared, forms, inputs: Inputs) -> list[dict]:
    from musicgen.music.abc import header_fields

    records = []
    for index, (text, result, valid, run, tune_form) in enumerate(
        zip(generated, checked.results, checked.valid, shared, forms, strict=True)
    ):
        nearest = None
        if run.nearest is not None:
            nearest = header_fields(inputs.train_texts[run.nearest]).get("T", "")
        records.append(
            {
                "index": index + 1,
                "title": header_fields(text).get("T", ""),
                "characters": len(text),
                "valid": valid,
                "failed": {name: reason for name, reason in result.items() if reason is not None},
                "longest_shared_chars": run.chars,
                "longest_shared_bars": run.bars,
                "nearest_training_tune": nearest,
                "form": None if tune_form is None else _form_record(tune_form),
                "abc": text,
            }
        )
    return records


def _form_record(tune_form: form.TuneForm) -> dict:
    return {
        "key": tune_form.key,
        "final_degree": tune_form.final_degree,
        "ends_on_tonic": tune_form.ends_on_tonic,
        "section_bars": [section.bars for section in tune_form.sections],
        "repeated_sections": [section.repeated for section in tune_form.sections],
        "length_bars": tune_form.length_bars,
    }


def evaluate_run(
    run_dir: Path,
    sample: SampleConfig,
    data_paths: Sequence[str | Path] = (),
    *,
    checkpoint: str = "best",
    loaded=None,
) -> dict:
    """Evaluates a trained run: likelihood, validity, statistics, form, novelty.

    Args:
        run_dir: a run directory written by `musicgen train`.
        sample: how many tunes to generate and how.
        data_paths: tunes to score instead of the run's validation tunes.
        checkpoint: "best" (the run's lowest validation bits/char) or "last"
            (`checkpoint.choose_checkpoint`).
        loaded: given, a callable that receives one line saying which step was loaded.

    Returns:
        The JSON-ready result (see README, `musicgen evaluate`).

    Raises:
        CheckpointError: the run cannot be loaded.
        CorpusError: its corpus or `data_paths` cannot be read.
    """
    from musicgen.runs.checkpoint import choose_checkpoint, restore_model
    from musicgen.runs.runfiles import load_run

    config, vocab = load_run(run_dir)
    chosen = choose_checkpoint(run_dir, checkpoint)
    model = restore_model(config, chosen)
    if loaded is not None:
        loaded(chosen.describe(run_dir))
    inputs = run_inputs(config, data_paths)
    started = time.perf_counter()
    likelihood = score_tunes(model, vocab, inputs.scored_texts)
    if config.data.common_root:
        from musicgen.music.keyroot import Homes, run_homes

        homes = run_homes(run_dir) or Homes()
        likelihood = likelihood.with_home_keys(inputs.scored_as_written, homes)
    scoring_seconds = time.perf_counter() - started
    generated, generating_seconds = generate_tunes(model, vocab, sample)
    result = {
        "run_dir": str(run_dir),
        "checkpoint": chosen.prefix,
        "checkpoint_kind": chosen.which,
        "step": chosen.step,
        "model": {k: v for k, v in dataclasses.asdict(config.model).items()},
        "scored": inputs.scored_source,
        "sampling": dataclasses.asdict(sample),
        **evaluate_texts(generated, inputs, likelihood),
    }
    result["seconds"].update(scoring=scoring_seconds, generating=generating_seconds)
    return result
