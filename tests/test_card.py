"""`musicgen info`: a model's card shows what the run's files hold (read here on their own), and
bad input is one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_checks import one_line_error
from click.testing import CliRunner

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from musicgen.cli import main  # noqa: E402
from musicgen.config import RunConfig  # noqa: E402
from musicgen.data.corpus import music21_corpus_folder  # noqa: E402

TUNEBOOK = music21_corpus_folder() / "oneills1850/0001-0050.abc"
TINY = ["--embedding-dim", "8", "--units", "32", "--layers", "1", "--batch-size", "16"]
TINY += ["--seq-length", "64", "--eval-every", "10", "--checkpoint-every", "20"]
TINY += ["--learning-rate", "0.03", "--random-seed", "7", "--valid-sample", "2"]


def invoke(*args: str):
    return CliRunner().invoke(main, [str(arg) for arg in args])


def info_json(*args) -> dict:
    result = invoke("info", *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("card") / "tiny"
    result = invoke("train", "--run-dir", run, "--data", TUNEBOOK, "--steps", "40", *TINY)
    assert result.exit_code == 0, result.stderr
    return run


def read_files(run: Path) -> tuple[dict, dict, list[dict]]:
    config = json.loads((run / "config.json").read_text())
    corpus = json.loads((run / "corpus.json").read_text())
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return config, corpus, metrics


@pytest.mark.slow
def test_info_shows_what_the_run_files_hold(run_dir, tmp_path, monkeypatch):
    from musicgen.runs.checkpoint import load_for_inference

    monkeypatch.chdir(tmp_path)  # no out/evaluate-tiny/ here
    config, corpus, metrics = read_files(run_dir)
    card = info_json(run_dir)
    model, vocab, _ = load_for_inference(run_dir)
    assert card["model"]["family"] == config["model"]["kind"] == "lstm"
    assert card["model"]["parameters"] == model.count_params()
    assert card["model"]["vocab_size"] == len(vocab)
    assert (card["model"]["layers"], card["model"]["units"]) == (1, 32)

    data = card["data"]
    assert data["tunes"] == corpus["tunes"] == 50
    assert data["train_tunes"] == corpus["train_tunes"]
    assert data["characters"] == corpus["train_characters"] + corpus["validation_characters"]
    assert data["collections"] == {"oneills1850": 50}

    training = card["training"]
    assert training["steps"] == metrics[-1]["step"] == 40
    assert training["target_steps"] == config["train"]["steps"]
    assert training["seconds"] == metrics[-1]["elapsed"]
    assert training["device"].startswith("CPU")

    validated = [e for e in metrics if "val_bits_per_char" in e]
    best = min(validated, key=lambda e: e["val_bits_per_char"])
    assert card["validation"]["last"]["step"] == validated[-1]["step"]
    assert card["validation"]["last"]["bits_per_char"] == validated[-1]["val_bits_per_char"]
    assert card["validation"]["best"]["step"] == best["step"]
    assert card["validation"]["best"]["bits_per_char"] == best["val_bits_per_char"]
    assert card["validation"]["best"]["valid_share"] == best["valid_share"]
    assert card["evaluation"] is None

    text = invoke("info", run_dir)
    assert text.exit_code == 0, text.stderr
    lines = text.stdout.splitlines()
    assert [line.split()[0] for line in lines] == [
        "model", "data", "training", "validation", "evaluation", "reads",
    ]  # fmt: skip
    assert lines[5].split(None, 1)[1] == (
        "whole tunes of up to 64 characters; every tune moved to root C, generated tunes moved "
        "home (--key or corpus keys)"
    )  # the default windows
    assert f"{model.count_params():,} parameters" in lines[0]
    assert "50 tunes" in lines[1] and "oneills1850 50" in lines[1]
    assert "40 steps of 40" in lines[2]
    assert f"{validated[-1]['val_bits_per_char']:.3f} bits/char at the last step (40)" in lines[3]
    assert f"best {best['val_bits_per_char']:.3f} at step {best['step']}" in lines[3]
    assert f"none yet (musicgen evaluate --run-dir {run_dir})" in lines[4]


@pytest.mark.slow
def test_info_shows_the_evaluation_and_evaluate_puts_it_on_the_card(run_dir, tmp_path):
    out = tmp_path / "evaluated"
    result = invoke("evaluate", "--run-dir", run_dir, "--num", "4", "--max-length", "300",
                    "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    evaluation = json.loads((out / "evaluation.json").read_text())
    _, _, metrics = read_files(run_dir)
    best = min(
        (e for e in metrics if "val_bits_per_char" in e), key=lambda e: e["val_bits_per_char"]
    )
    assert f"loaded the best checkpoint of {run_dir}: step {best['step']}" in result.stderr
    assert evaluation["step"] == best["step"] and evaluation["checkpoint_kind"] == "best"

    card = info_json(run_dir)
    figures = card["evaluation"]
    generated = evaluation["validity"]["generated"]
    assert figures["source"] == str(out / "evaluation.json")
    assert figures["tunes"] == generated["tunes"] == 4
    assert figures["valid_share"] == generated["valid_share"]
    assert figures["real_valid_share"] == evaluation["validity"]["real"]["valid_share"]
    assert figures["copying_share"] == evaluation["novelty"]["generated"]["copying_share"]
    assert figures["bits_per_char"] == evaluation["likelihood"]["bits_per_char"]
    assert figures["step"] == best["step"]
    stored = json.loads((run_dir / "card.json").read_text())
    assert stored["evaluation"] == figures

    text = next(
        line for line in invoke("info", run_dir).stdout.splitlines() if "evaluation" in line
    )
    assert f"{100 * generated['valid_share']:.1f}% of 4 generated tunes pass every check" in text
    copying = evaluation["novelty"]["generated"]["copying_share"]
    assert f"{100 * copying:.1f}% copy a 4-bar phrase" in text

    # --evaluation names another result; its figures are shown instead.
    other = tmp_path / "other.json"
    evaluation["validity"]["generated"]["valid_share"] = 0.25
    other.write_text(json.dumps(evaluation))
    assert info_json(run_dir, "--evaluation", other)["evaluation"]["valid_share"] == 0.25


def test_a_model_folder_with_only_config_and_card_gets_the_stored_card(tmp_path):
    """What a model shipped without its logs looks like: the card's own figures are shown."""
    folder = tmp_path / "bundled"
    folder.mkdir()
    RunConfig().save(folder / "config.json")
    stored = {
        "data": {"tunes": 4415, "train_tunes": 4194, "validation_tunes": 221,
                 "characters": 1_300_000, "sources_per": "tune",
                 "collections": {"music21:oneills1850": 2009}, "other_collections": 0},
        "training": {"steps": 1500, "target_steps": 1500, "seconds": 1234.0,
                     "chars_per_sec": 10000.0, "stopped": None, "device": "CPU (2 cores)"},
        "validation": {"last": {"step": 1500, "bits_per_char": 1.6, "valid_share": 0.9},
                       "best": {"step": 1200, "bits_per_char": 1.5, "valid_share": 0.95}},
    }  # fmt: skip
    (folder / "card.json").write_text(json.dumps(stored))
    card = info_json(folder)
    for part in ("data", "training", "validation"):
        assert card[part] == stored[part]
    lines = invoke("info", folder).stdout.splitlines()
    assert "4,415 tunes" in lines[1] and "1,500 steps of 1,500 in 20m34s" in lines[2]
    assert "best 1.500 at step 1,200 (95% of sampled tunes valid)" in lines[3]


def test_bad_input_to_info_is_one_line(tmp_path, monkeypatch):
    one_line_error(invoke("info", tmp_path / "nowhere"), "nowhere: no such run directory")
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "config.json").write_text('{"camera": "x"}')
    one_line_error(invoke("info", foreign), "photos: not a musicgen run directory")
    monkeypatch.chdir(tmp_path)
    one_line_error(invoke("info"), "no trained run under checkpoints/")

    folder = tmp_path / "run"
    folder.mkdir()
    RunConfig().save(folder / "config.json")
    one_line_error(
        invoke("info", folder, "--evaluation", tmp_path / "missing.json"),
        "missing.json: no such evaluate result",
    )
    not_a_result = tmp_path / "list.json"
    not_a_result.write_text('{"tunes": []}')
    one_line_error(
        invoke("info", folder, "--evaluation", not_a_result), "not a musicgen evaluate result"
    )
    (folder / "card.json").write_text("[1, 2")
    one_line_error(invoke("info", folder), "card.json: unreadable")


def test_info_answers_without_tensorflow(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    RunConfig().save(folder / "config.json")
    code = (
        "import sys; from click.testing import CliRunner; from musicgen.cli import main; "
        f"r = CliRunner().invoke(main, ['info', {str(folder)!r}]); "
        "assert r.exit_code == 0, r.output; "
        "assert 'tensorflow' not in sys.modules; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"
