"""The speed benchmark runs end to end and reports every figure; the reference is as described.

No timing thresholds here: how fast is a question for `bench/speed.py`, not for unit tests.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import musicgen

BENCH = Path(__file__).resolve().parent.parent / "bench"

import reference  # noqa: E402  (bench/ is scripts, not a package)
import speed  # noqa: E402


def test_reference_model_has_the_labs_size():
    model = reference.build_reference_model(83, 8)
    assert model.count_params() == 5_353_299  # "5.35M parameters for 83 characters"
    lstm = next(layer for layer in model.layers if layer.name.startswith("lstm"))
    assert lstm.stateful


def test_reference_batches_are_inputs_shifted_by_one():
    vocab, ids = reference.vectorize("X:1\nabcdefg\n")
    assert vocab == sorted(set("X:1\nabcdefg\n"))
    inputs, targets = reference.get_batch(ids, 5, 3, np.random.default_rng(0))
    assert inputs.shape == targets.shape == (3, 5)
    for row_in, row_out in zip(inputs, targets):
        start = int(np.flatnonzero(ids == row_in[0])[0])
        assert list(row_out) == list(ids[start + 1 : start + 6])


def test_compared_parts_run_a_b_b_a():
    order = speed.schedule(2)
    compared = order[: 2 * len(speed.COMPARED)]
    assert compared == [*speed.COMPARED, *reversed(speed.COMPARED)]
    assert order[len(compared) :] == list(speed.INFORMATION)


def test_rounds_combine_as_total_characters_over_total_seconds():
    runs = [
        {"chars": 100, "seconds": 1.0, "chars_per_sec": 100.0},
        {"chars": 100, "seconds": 3.0, "chars_per_sec": 100 / 3},
    ]
    combined = speed.combine_rates(runs)
    assert combined["chars_per_sec"] == pytest.approx(50.0)
    assert combined["runs_chars_per_sec"] == [100.0, 33.3]


# Figures that may rightly be zero: a config value, and a compile time that can vanish in noise.
MAY_BE_ZERO = ("dropout", "compile_seconds", "bar_clock")  # bar_clock: 0 in the same-size model


def numbers(tree, where=""):
    """(path, value) for every number in a JSON tree."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from numbers(value, f"{where}.{key}")
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            yield from numbers(value, f"{where}[{i}]")
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        yield where, tree


def run_quick(script: str, timeout: int) -> dict:
    """Runs `bench/SCRIPT --quick` in a fresh interpreter and returns the JSON it printed."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, str(BENCH / script), "--quick"],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    # Every bench JSON names the commit and version its figures come from.
    commit = subprocess.run(
        ["git", "-C", str(BENCH.parent), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert report["provenance"]["git_commit"] == (commit or None)
    assert report["provenance"]["musicgen_version"] == musicgen.__version__
    return report


@pytest.mark.slow
def test_quick_benchmark_reports_every_figure():
    report = run_quick("speed.py", timeout=900)

    assert set(report["ratios"]) == {"train_same_size", "generate_1", "generate_32"}
    assert len(report["ratios_per_round"]) == report["settings"]["rounds"]
    assert {"cores", "tensorflow", "device"} <= set(report["machine"])
    assert "irish.abc" in report["corpus"]["substitution"]
    for side in ("reference", "ours_same_size", "ours_default"):
        assert report["train"][side]["chars_per_sec"] > 0
        assert report["generate"][side]["memory"]["peak_rss_mb"] > 0
    for side in ("ours_same_size", "ours_default"):
        generated = report["generate"][side]
        for batch in ("batch_1", "batch_n"):
            assert generated[batch]["chars_per_sec"] > 0
            # EOS is masked for the benchmark, so every tune runs to full length.
            assert generated[batch]["shortest_tune_chars"] == report["settings"]["gen_chars"]
    assert report["generate"]["reference"]["chars"] == report["settings"]["gen_chars"]
    assert len(report["peak_rss_mb"]) == 6

    for section in ("ratios", "ratios_per_round", "train", "generate", "peak_rss_mb"):
        for where, number in numbers(report[section], section):
            if where.endswith(MAY_BE_ZERO):
                assert number >= 0, where
            else:
                assert number > 0, where


@pytest.mark.slow
def test_quick_time_to_quality_judges_both_recipes_alike():
    report = run_quick("time_to_quality.py", timeout=900)
    assert report["budget_seconds"] >= report["settings"]["budget"]
    for side in ("ours", "reference"):
        curve = report[side]["curve"]
        assert len(curve) >= 2
        assert [p["seconds"] for p in curve] == sorted(p["seconds"] for p in curve)
        assert all(0 < p["bits_per_char"] < 20 for p in curve)
        assert report[side]["final_bits_per_char"] == curve[-1]["bits_per_char"]
        generated = report[side]["generated"]
        assert generated["validity"]["tunes"] == report["settings"]["num"]
        assert set(generated["validity"]["checks"]) >= {"header", "parses", "bars", "repeats"}
        assert generated["novelty"]["tunes"] == report["settings"]["num"]
    # The reference reaches its own final figure within its budget, by definition.
    reached = report["seconds_to_reach_reference_final"]["reference"]
    assert 0 < reached <= report["budget_seconds"]
    assert set(report["targets"]) == {
        "lower_bits_per_char_than_reference",
        "ours_valid_share_at_least_95",
    }


@pytest.mark.slow
def test_quick_midi_ingest_benchmark_reports_every_figure():
    report = run_quick("ingest_midi.py", timeout=600)
    ours = report["ours"]
    assert ours["files"] == ours["converted"] == report["made"]["made"]
    assert ours["files"] == report["settings"]["files"]
    assert ours["tunes_kept"] > 0.9 * ours["files"]
    for where, number in numbers({k: ours[k] for k in ("files_per_sec", "per_file_ms", "memory")}):
        assert number > 0, where
    if report["reference"] is not None:
        assert report["reference"]["files_per_sec"] > 0 and report["ratio_files_per_sec"] > 0


@pytest.mark.slow
def test_quick_model_comparison_reports_every_figure():
    report = run_quick("models.py", timeout=1200)
    for kind in ("lstm", "transformer"):
        generated = report["generation"][kind]
        assert generated["tracing_counts"] == {"prime": 1, "decode": 1}
        # EOS is masked, so every tune runs to full length.
        assert generated["batch_1"]["chars_20"]["chars"] == 20 * report["budget"]["gen_repeats"]
        assert set(report["flags_over_float32"][kind]) == {"mixed_precision", "xla"}
        compared = report["comparison"][kind]
        assert compared["steps"] == 3 and compared["validation_tunes"] == 8
        assert 0 < compared["val_bits_per_char_whole_tunes"] < 10
        assert 0 <= compared["sampling"]["valid"] <= compared["sampling"]["tunes"] == 4
    for where, number in numbers(report["generation_over_reference"], "generation"):
        assert number > 0, where


@pytest.mark.slow
def test_quick_decode_step_benchmark_reports_both_models():
    report = run_quick("decode_step.py", timeout=600)
    for num in (1, 32):
        row = report[f"batch_{num}"]
        for key in ("lstm_ms", "lstm_60_ms", "transformer_ms", "cache_256_ms", "cache_64_ms"):
            assert row[key] > 0, key
        assert row["slide_ms"] > 0
        ratio = row["transformer_ms"] / row["lstm_ms"]
        assert row["transformer_over_lstm"] == pytest.approx(ratio, abs=0.01)


@pytest.mark.slow
def test_quick_large_corpus_benchmark_reports_every_figure():
    report = run_quick("large_corpus.py", timeout=600)
    sizes = [str(size) for size in report["settings"]["sizes"]]
    for size in sizes:
        measured = report["sizes"][size]
        assert measured["cold"]["tunes"] == measured["warm"]["tunes"] == int(size)
        assert not measured["cold"]["from_cache"] and measured["warm"]["from_cache"]
    assert set(report["time_per_tune_ratio"]) == {f"{size}/{sizes[0]}" for size in sizes}
    assert report["pipeline"]["from_cache"]
    for section in ("time_per_tune_ratio", "cold_tunes_per_sec", "peak_rss_mb", "pipeline"):
        for where, number in numbers(report[section], section):
            assert number > 0, where


@pytest.mark.slow
def test_quick_finetune_benchmark_judges_every_contender():
    report = run_quick("finetune.py", timeout=1200)
    tunebook = report["tunebook"]
    assert tunebook["collection"] == "essenFolksong"
    assert tunebook["training"] + tunebook["held_out"] == tunebook["tunes"] > 0
    contenders = {result["contender"] for result in report["results"]}
    assert contenders == {"reference", "scratch", "finetuned"}
    for result in report["results"]:
        assert 0 < result["held_out_bits_per_char"] < 20
        assert 0 <= result["valid_share"] <= 1
        assert result["training"]["steps"] > 0
    fine = next(r for r in report["results"] if r["contender"] == "finetuned")
    assert fine["training"]["parent"].startswith("bundled:")
    # Starting from trained weights, even a tiny model's held-out figure beats 20 s from scratch.
    scratch = next(r for r in report["results"] if r["contender"] == "scratch")
    assert fine["held_out_bits_per_char"] < scratch["held_out_bits_per_char"]
