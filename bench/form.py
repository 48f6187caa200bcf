"""The form of tunes (`musicgen.evaluation.form`): the bundled corpus's real tunes, and trained
runs' generated tunes beside them, each figure and histogram with its distance.

    .venv/bin/python bench/form.py > form.json                                 # the corpus alone
    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python bench/form.py --run-dir RUN [--run-dir RUN2...]
        [--num 400] [--no-score] > form.json

For each run: `--num` tunes generated as `musicgen evaluate` generates them (its sampling options,
default sampling settings unless given), their form compared with the run's training tunes (the
corpus `evaluate` compares with) and with the bundled corpus, the share passing every headline
check, and the bits/char of the run's validation tunes (each read whole; `--no-score` skips it).
This is the table the candidates of issue 13 are compared on: tonic endings, sections per tune,
bars per section, tune length.

One JSON object goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from provenance import print_json


def log(message: str) -> None:
    print(f"[form] {message}", file=sys.stderr, flush=True)


def corpus_form() -> tuple[list, dict]:
    """The bundled corpus's forms, and their figures and distributions."""
    from musicgen.data.corpus import load_corpus
    from musicgen.evaluation import form

    tunes, _ = load_corpus()
    forms = form.read_forms(tune.text for tune in tunes)
    summary = {
        "tunes": len(tunes),
        "read": len(forms),
        "figures": form.figures(forms),
        "distributions": form.distributions(forms),
    }
    return forms, summary


def judge_run(run_dir: Path, sample, bundled_forms: list, score: bool) -> dict:
    """One run: generate, check, and compare the form (and score the validation tunes)."""
    from musicgen.evaluation import evaluate, form
    from musicgen.runs.checkpoint import latest_checkpoint, load_for_inference

    model, vocab, config = load_for_inference(run_dir)
    inputs = evaluate.run_inputs(config)
    result = {
        "run_dir": str(run_dir),
        "checkpoint": latest_checkpoint(run_dir),
        "model": dataclasses.asdict(config.model),
        "train": dataclasses.asdict(config.train),
        "sampling": dataclasses.asdict(sample),
    }
    if score:
        started = time.perf_counter()
        likelihood = evaluate.score_tunes(model, vocab, inputs.validation_texts)
        result["validation_bits_per_char"] = likelihood.bits_per_char
        if config.data.common_root:  # the model reads tunes at root C: also as written
            from musicgen.music.keyroot import Homes, run_homes

            homes = run_homes(run_dir) or Homes()
            # with no --data, the scored tunes are the validation tunes
            likelihood = likelihood.with_home_keys(inputs.scored_as_written, homes)
            result["validation_bits_per_char_as_written"] = likelihood.as_written_bits_per_char
        result["scoring_seconds"] = time.perf_counter() - started
    log(f"{run_dir}: generating {sample.num} tunes")
    generated, seconds = evaluate.generate_tunes(model, vocab, sample)
    result["generating_seconds"] = seconds
    result["valid_share"] = evaluate.check_tunes(generated, use_abc2midi=False).summary()[
        "valid_share"
    ]
    generated_forms = form.read_forms(generated)
    result["form_vs_training_tunes"] = form.compare(
        generated_forms, form.read_forms(inputs.train_texts)
    )
    result["form_vs_bundled_corpus"] = form.compare(generated_forms, bundled_forms)
    return result


def headline(result: dict) -> dict:
    """The figures issue 13's targets name, for a quick look."""
    compared = result["form_vs_training_tunes"]
    figures, distributions = compared["figures"], compared["distributions"]
    return {
        "tonic_ending_share": figures["tonic_ending_share"],
        "sections_per_tune_tv": distributions["sections_per_tune"]["total_variation"],
        "bars_per_section_tv": distributions["bars_per_section"]["total_variation"],
        "mean_length_bars": figures["mean_length_bars"],
        "valid_share": result["valid_share"],
        "validation_bits_per_char": result.get("validation_bits_per_char"),
        "validation_bits_per_char_as_written": result.get("validation_bits_per_char_as_written"),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", action="append", type=Path, default=[], dest="run_dirs")
    parser.add_argument("--num", type=int, default=100, help="tunes to generate per run")
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--max-length", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-score", action="store_true", help="skip validation bits/char")
    args = parser.parse_args(argv)

    from musicgen.config import SampleConfig

    started = time.perf_counter()
    log("reading the bundled corpus")
    bundled_forms, corpus = corpus_form()
    output = {"bundled_corpus": corpus, "runs": []}
    options = {
        name: value
        for name, value in (
            ("temperature", args.temperature),
            ("top_p", args.top_p),
            ("top_k", args.top_k),
            ("max_length", args.max_length),
        )
        if value is not None
    }
    sample = SampleConfig(num=args.num, random_seed=args.seed, **options)
    for run_dir in args.run_dirs:
        result = judge_run(run_dir, sample, bundled_forms, score=not args.no_score)
        result["headline"] = headline(result)
        output["runs"].append(result)
    output["seconds"] = time.perf_counter() - started
    print_json(output)
    return output


if __name__ == "__main__":
    main()
