"""`musicgen evaluate` on a tiny model trained on real tunes: the likelihood against a direct
computation, unknown characters counted, and the command end to end (JSON, page, plots)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from cli_checks import train_tiny
from click.testing import CliRunner

from musicgen.cli import main
from musicgen.data.corpus import load_corpus
from musicgen.evaluation.checks import HEADLINE_CHECKS
from musicgen.music.abc import read_text_file, split_tunebook

pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def run_dir(oneills_file, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "tiny"
    train_tiny(oneills_file, run, 30)
    return run


def test_bits_per_char_equals_a_direct_computation(run_dir, oneills_file):
    from musicgen.data.vocab import BOS, EOS
    from musicgen.evaluation.evaluate import score_tunes
    from musicgen.runs.checkpoint import load_for_inference

    model, vocab, _ = load_for_inference(run_dir)
    tunes = split_tunebook(read_text_file(oneills_file), "oneills")[0][:5]
    texts = [tune.text for tune in tunes]
    likelihood = score_tunes(model, vocab, texts)
    # One tune at a time, no padding, the model called directly, log-softmax in NumPy.
    nats = count = 0.0
    for text in texts:
        ids = [BOS, *vocab.encode(text), EOS]
        logits = np.asarray(model(np.asarray([ids[:-1]], np.int32)))[0].astype(np.float64)
        shifted = logits - logits.max(-1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
        nats -= log_probs[np.arange(len(ids) - 1), ids[1:]].sum()
        count += len(ids) - 1
    assert likelihood.characters == count == sum(len(t) + 1 for t in texts)
    assert likelihood.bits_per_char == pytest.approx(nats / count / math.log(2), rel=1e-4)
    assert likelihood.unknown_characters == 0


def test_unknown_characters_are_counted_not_dropped(run_dir):
    from musicgen.evaluation.evaluate import score_tunes
    from musicgen.runs.checkpoint import load_for_inference

    model, vocab, _ = load_for_inference(run_dir)
    text = "X:1\nT:Caf\u00e9 \u00e9t\u00e9\nM:6/8\nL:1/8\nK:G\nGAB cde|\n"
    assert "\u00e9" not in vocab  # O'Neill's first fifty tunes have no accents
    likelihood = score_tunes(model, vocab, [text])
    assert likelihood.unknown_characters == 3
    assert likelihood.unknown_distinct == ("\u00e9",)
    assert likelihood.tunes_with_unknown == 1
    assert likelihood.characters == len(text) + 1 - 3


def test_evaluate_command_end_to_end(run_dir, tmp_path):
    out = tmp_path / "evaluation"
    args = ["evaluate", "--run-dir", str(run_dir), "--num", "6", "--max-length", "300"]
    args += ["--out", str(out), "--json", "--data", str(DATA / "abc" / "tunebook.abc")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output + result.stderr
    report = json.loads(result.stdout)
    assert report == json.loads((out / "evaluation.json").read_text())

    # Likelihood on --data: the test tunebook's titles hold accents the run never saw.
    vocab = set(json.loads((run_dir / "vocab.json").read_text())["characters"])
    scored, _ = load_corpus([DATA / "abc" / "tunebook.abc"])  # duplicates dropped, as evaluate does
    unknown = sum(c not in vocab for tune in scored for c in tune.text)
    likelihood = report["likelihood"]
    assert likelihood["tunes"] == len(scored)
    assert likelihood["unknown_characters"] == unknown > 0
    assert 0 < likelihood["bits_per_char"] < 10

    # Validity: the summary agrees with the per-tune records.
    tunes = report["tunes"]
    assert len(tunes) == 6
    generated = report["validity"]["generated"]
    assert generated["valid"] == sum(t["valid"] for t in tunes)
    for name in HEADLINE_CHECKS:
        passed = sum(name not in t["failed"] for t in tunes)
        assert generated["checks"][name] == pytest.approx(passed / 6)
    for tune in tunes:
        assert tune["valid"] == (not set(tune["failed"]) & set(HEADLINE_CHECKS))
    # Real tunes (the run's training tunes) all have their header fields.
    assert report["validity"]["real"]["checks"]["header"] == 1.0
    assert report["validity"]["real"]["tunes"] >= 45

    assert set(report["statistics"]["distributions"]) == {
        "pitch_class",
        "duration",
        "pitch_range",
        "length_bars",
        "key",
        "meter",
    }
    corpus_pitch = report["statistics"]["distributions"]["pitch_class"]["corpus"]
    assert sum(corpus_pitch.values()) == pytest.approx(1.0)
    assert report["novelty"]["generated"]["tunes"] == 6

    # Form: generated against the run's training tunes, each figure and histogram with a distance.
    form = report["form"]
    assert set(form["distributions"]) == {
        "final_degree",
        "sections_per_tune",
        "bars_per_section",
        "length_bars",
    }
    assert form["figures"]["tunes"]["corpus"] >= 45
    corpus_tonic = form["figures"]["tonic_ending_share"]["corpus"]
    assert 0.6 < corpus_tonic <= 1.0  # O'Neill's first fifty tunes nearly all come home
    assert form["figures"]["median_length_bars"]["corpus"] == 16
    read = [t["form"] for t in tunes if t["form"] is not None]
    assert form["figures"]["tunes"]["generated"] == len(read)
    if read:
        endings = [t["ends_on_tonic"] for t in read if t["ends_on_tonic"] is not None]
        generated_tonic = form["figures"]["tonic_ending_share"]["generated"]
        assert generated_tonic == (pytest.approx(sum(endings) / len(endings)) if endings else None)
        for name in ("sections_per_tune", "bars_per_section"):
            assert 0.0 <= form["distributions"][name]["total_variation"] <= 1.0
        for record in read:
            assert record["length_bars"] == sum(record["section_bars"])

    page = (out / "report.md").read_text()
    for name in HEADLINE_CHECKS:
        assert f"| {name} |" in page
    assert "## Form" in page and "| tonic_ending_share |" in page
    from musicgen.evaluation.report import summary_lines

    assert any(line.startswith("ending on the tonic:") for line in summary_lines(report))
    for image in ("loss.png", "pitch_classes.png", "durations.png", "form_sections.png"):
        assert f"]({image})" in page
        assert matplotlib.image.imread(out / image).shape[0] > 100


def test_evaluate_without_a_run_is_one_line_error(tmp_path):
    result = CliRunner().invoke(main, ["evaluate", "--run-dir", str(tmp_path / "none")])
    assert result.exit_code == 1
    assert result.stderr.startswith("musicgen: error:")
    assert len(result.stderr.strip().splitlines()) == 1
