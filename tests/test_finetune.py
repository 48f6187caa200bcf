"""Fine-tuning (`train --init`): a tiny parent trained on O'Neill tunes 1-50 and exported as a
bundled model, fine-tuned on tunes 51-100, whose characters `"`, `?`, `U`, `[` and `]` the parent
never saw. Known logits unchanged at step 0, new characters learnt, the parent recorded, resume
exact, and every misuse one line."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import types
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
from cli_checks import invoke, one_line_error  # noqa: E402
from run_checks import read_checkpoint  # noqa: E402

import musicgen.training.train as train_module  # noqa: E402
from musicgen.config import (  # noqa: E402
    DataConfig,
    InitConfig,
    ModelConfig,
    RunConfig,
    SampleConfig,
    TrainConfig,
)
from musicgen.data.corpus import load_corpus, music21_corpus_folder  # noqa: E402
from musicgen.data.tune_split import split_corpus  # noqa: E402
from musicgen.data.vocab import BOS, EOS, UNK, Vocabulary  # noqa: E402
from musicgen.errors import CheckpointError  # noqa: E402
from musicgen.generation.generate import Generator  # noqa: E402
from musicgen.runs import bundled  # noqa: E402
from musicgen.runs.checkpoint import load_for_inference  # noqa: E402
from musicgen.training.export import export_bundled  # noqa: E402
from musicgen.training.finetune import FINETUNE_CHARACTERS, FINETUNE_LEARNING_RATE  # noqa: E402
from musicgen.training.train import train  # noqa: E402

# Every test here trains a model, or uses one a fixture trained.
pytestmark = pytest.mark.slow
PARENT_BOOK = music21_corpus_folder() / "oneills1850/0001-0050.abc"
CHILD_BOOK = music21_corpus_folder() / "oneills1850/0051-0100.abc"
NEW_CHARACTERS = '"?U[]'
NAME = "tiny-parent"
TINY_MODEL = ModelConfig(embedding_dim=8, units=32, layers=1, dropout=0.1)
QUICK = dict(batch_size=32, warmup_steps=5, eval_batches=2, valid_sample=0)
PARENT = RunConfig(
    data=DataConfig(paths=(str(PARENT_BOOK),), seq_length=64),
    model=TINY_MODEL,
    train=TrainConfig(
        steps=40, learning_rate=3e-2, eval_every=20, checkpoint_every=20, random_seed=7, **QUICK
    ),
)


def child_config(steps: int, parent: str = f"bundled:{NAME}") -> RunConfig:
    return RunConfig(
        data=DataConfig(paths=(str(CHILD_BOOK),), seq_length=64),
        model=TINY_MODEL,
        train=TrainConfig(
            steps=steps,
            learning_rate=2e-2,
            eval_every=10,
            checkpoint_every=10,
            random_seed=3,
            **QUICK,
        ),  # fmt: skip
        init=InitConfig(parent),
    )


@pytest.fixture(scope="module")
def child_tunes():
    tunes = load_corpus([CHILD_BOOK])[0]
    assert "".join(sorted(set("".join(t.text for t in tunes)) - PARENT_CHARACTERS)) == "".join(
        sorted(NEW_CHARACTERS)
    )
    return tunes


PARENT_CHARACTERS = set("".join(t.text for t in load_corpus([PARENT_BOOK])[0]))


@pytest.fixture(scope="module")
def parent_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("parent") / "run"
    train(PARENT, split_corpus(load_corpus([PARENT_BOOK])[0], PARENT.data),
          run, progress=False, log=lambda _: None)
    return run


@pytest.fixture(scope="module")
def parent_root(parent_run, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bundled")
    tunes = [t.text for t in load_corpus([PARENT_BOOK])[0][:4]]
    export_bundled(parent_run, NAME, root=root, tunes=tunes)
    return root


@pytest.fixture
def parent(parent_root, monkeypatch, tmp_path) -> Path:
    """The bundled parent's folder, found through MUSICGEN_BUNDLED_DIR; the test runs in an empty
    folder."""
    monkeypatch.setenv(bundled.ENV_VAR, str(parent_root))
    monkeypatch.chdir(tmp_path)
    return parent_root / NAME


@pytest.fixture(scope="module")
def finetuned(parent_root, child_tunes, tmp_path_factory):
    """A fine-tuned run of 30 steps: (run directory, log messages)."""
    previous = os.environ.get(bundled.ENV_VAR)
    os.environ[bundled.ENV_VAR] = str(parent_root)
    run = tmp_path_factory.mktemp("finetuned") / "run"
    messages: list[str] = []
    try:
        train(child_config(30), split_corpus(child_tunes, child_config(30).data),
              run, progress=False, log=messages.append)
    finally:
        if previous is None:
            os.environ.pop(bundled.ENV_VAR)
        else:
            os.environ[bundled.ENV_VAR] = previous
    return run, messages


def logits_of(model, vocab: Vocabulary, text: str) -> np.ndarray:
    ids = np.array([[BOS, *vocab.encode(text, strict=False), EOS]], np.int32)
    return model.sequence_logits(ids).numpy()[0]  # (time, vocab)


def test_known_logits_are_the_parents_before_the_first_step(parent, child_tunes, monkeypatch):
    """Through `train` itself, stopped where its loop would take the first step."""
    seen = {}

    def no_steps(self, step_fn, batches, evaluate, start, stop):
        seen.update(model=self.model, iterations=int(self.optimizer.iterations.numpy()))

    monkeypatch.setattr(train_module._Session, "_loop", no_steps)
    messages: list[str] = []
    train(child_config(5), split_corpus(child_tunes, child_config(5).data),
          Path("run"), progress=False, log=messages.append)
    vocab = Vocabulary.load(Path("run/vocab.json"))
    parent_model, parent_vocab, _ = load_for_inference(parent)
    old = len(parent_vocab)
    assert vocab.characters[: len(parent_vocab.characters)] == parent_vocab.characters
    assert "".join(vocab.characters[len(parent_vocab.characters) :]) == NEW_CHARACTERS
    assert seen["iterations"] == 0  # a fresh optimizer

    tune = next(t.text for t in child_tunes if '"' in t.text and "U" in t.text)
    ours = logits_of(seen["model"], vocab, tune)  # the new characters have ids of their own
    theirs = logits_of(parent_model, parent_vocab, tune)  # the parent read them as UNK
    assert ours.shape == (len(tune) + 2, len(vocab))
    np.testing.assert_allclose(ours[:, :old], theirs, rtol=1e-5, atol=1e-5)
    for column in range(old, len(vocab)):  # each new character starts as the parent's UNK
        np.testing.assert_allclose(ours[:, column], theirs[:, UNK], rtol=1e-5, atol=1e-5)
    step = json.loads((parent / "card.json").read_text())["exported_from"]["step"]
    said = f"fine-tuning from bundled:{NAME} (its step {step}); new characters '{NEW_CHARACTERS}'"
    assert said in messages


def test_a_transformers_vocabulary_grows_the_same_way(child_tunes):
    """The rule is by shape, not by layer: a tiny Transformer's embedding and output layer grow,
    its position embedding (also a table) does not."""
    from musicgen.runs.weights import build_model_for, model_weights
    from musicgen.training.finetune import (
        Parent,
        ParentWeights,
        extended_vocabulary,
        load_parent_weights,
    )

    vocab = Vocabulary(sorted(PARENT_CHARACTERS))
    shape = dict(kind="transformer", d_model=16, heads=2, ff_dim=32, layers=1, context=64)
    config = RunConfig(model=ModelConfig(vocab_size=len(vocab), **shape))
    parent_model = build_model_for(config)
    arrays = {key: v.numpy() for key, v in model_weights(parent_model).items()}
    weights = ParentWeights(Parent("test", Path("."), config, vocab), arrays, 0)
    grown = extended_vocabulary(vocab, "".join(t.text for t in child_tunes))
    model = build_model_for(RunConfig(model=ModelConfig(vocab_size=len(grown), **shape)))
    load_parent_weights(model, weights, grown)
    tune = next(t.text for t in child_tunes if "U" in t.text)[:60]
    ours, theirs = logits_of(model, grown, tune), logits_of(parent_model, vocab, tune)
    np.testing.assert_allclose(ours[:, : len(vocab)], theirs, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours[:, -1], theirs[:, UNK], rtol=1e-5, atol=1e-5)


def test_the_run_records_its_parent_and_loads_like_any_run(finetuned, parent_root):
    run, _ = finetuned
    config = json.loads((run / "config.json").read_text())
    step = json.loads((parent_root / NAME / "card.json").read_text())["exported_from"]["step"]
    assert config["init"] == {
        "parent": f"bundled:{NAME}",
        "step": step,
        "added_characters": NEW_CHARACTERS,
    }
    filled = {name: config["model"][name] for name in ("vocab_size", "bar_ids")}
    assert config["model"] == {**dataclasses.asdict(TINY_MODEL), **filled}
    model, vocab, run_config = load_for_inference(run, checkpoint="best")
    # The bar clock's ids are those of the grown vocabulary (the parent's characters kept theirs).
    assert filled["bar_ids"] == [vocab.encode(c)[0] for c in "|:]"]
    assert run_config.init == InitConfig(f"bundled:{NAME}", step, NEW_CHARACTERS)
    assert len(vocab) == model.config.vocab_size


def test_new_characters_are_learnt_and_sampled(finetuned, parent, child_tunes):
    run, _ = finetuned
    model, vocab, _ = load_for_inference(run, checkpoint="last")
    parent_model, parent_vocab, _ = load_for_inference(parent)
    quote = vocab.encode('"')[0]
    before, after = [], []
    for tune in child_tunes:
        ids = [BOS, *vocab.encode(tune.text), EOS]
        at = [i for i, token in enumerate(ids[1:]) if token == quote]  # predicting a '"'
        if at:
            probs = tf.nn.softmax(logits_of(model, vocab, tune.text)).numpy()
            after += list(probs[at, quote])
            parent_probs = tf.nn.softmax(logits_of(parent_model, parent_vocab, tune.text)).numpy()
            before += list(parent_probs[at, UNK])
    assert np.mean(after) > 10 * np.mean(before)  # 30 steps: about 18 times as likely
    texts = Generator(model, vocab).generate(
        "X:1\n", SampleConfig(num=32, temperature=1.0, max_length=400, random_seed=5)
    )
    assert set("".join(texts)) & set(NEW_CHARACTERS)


def test_a_resumed_fine_tuned_run_ends_as_the_uninterrupted_one(
    finetuned, parent, child_tunes, monkeypatch
):
    reference, _ = finetuned

    def interrupt_at_17(step, figures):
        if step == 17:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(child_config(30), split_corpus(child_tunes, child_config(30).data),
              Path("run"), progress=False, log=lambda _: None,
              on_step=interrupt_at_17)  # fmt: skip
    monkeypatch.setenv(bundled.ENV_VAR, "")  # a resume needs nothing of the parent's
    result = train(child_config(30), split_corpus(child_tunes, child_config(30).data),
                   Path("run"), resume=True, progress=False,
                   log=lambda _: None)  # fmt: skip
    assert result.step == 30 and result.steps_run == 13
    finished = read_checkpoint(result.checkpoint)
    expected = read_checkpoint(str(reference / "ckpt" / "ckpt-30"))
    assert finished.keys() == expected.keys()
    for name, value in expected.items():
        assert np.array_equal(finished[name], value), name
    assert json.loads(Path("run/config.json").read_text())["init"]["added_characters"]


@pytest.fixture
def parent_copy(parent_root, monkeypatch, tmp_path) -> Path:
    """A copy of the bundled parent that a test may damage."""
    root = tmp_path / "models"
    shutil.copytree(parent_root, root)
    monkeypatch.setenv(bundled.ENV_VAR, str(root))
    monkeypatch.chdir(tmp_path)
    return root / NAME


def test_fine_tuning_on_the_command_line_then_generate_and_resume(parent_copy):
    options = ["--steps", 6, "--batch-size", 16, "--eval-every", 3, "--valid-sample", 0]
    result = invoke("train", "--data", CHILD_BOOK, "--init", "bundled", "--run-dir", "ft", *options)
    assert result.exit_code == 0, result.stderr
    assert f"fine-tuning from bundled:{NAME}" in result.stderr
    config = RunConfig.load(Path("ft/config.json"))
    assert config.init.parent == f"bundled:{NAME}" and config.train.learning_rate == 1e-3
    result = invoke("generate", "--run-dir", "ft", "--num", 1, "--max-length", 60, "--out", "o",
                    "--no-audio", "--no-score")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    result = invoke("train", "--run-dir", "ft", "--resume", "--steps", 8, "--data", CHILD_BOOK)
    assert result.exit_code == 0, result.stderr
    assert "resumed ft at step 6 of 8" in result.stderr
    card = invoke("info", "ft").stdout
    assert f"parent     fine-tuned from bundled:{NAME} (its step " in card
    assert f"new characters: '{NEW_CHARACTERS}'" in card
    one_line_error(
        invoke("train", "--run-dir", "ft", "--resume", "--init", Path("elsewhere").resolve()),
        "no such run directory or bundled model",
    )


def captured_config(monkeypatch, *args) -> RunConfig:
    """The config `train --init ...` hands to the library, which is stopped there."""
    seen = {}

    def fake_train(config, *rest, **options):
        seen["config"] = config
        return types.SimpleNamespace(best_checkpoint=None)

    monkeypatch.setattr(train_module, "train", fake_train)
    result = invoke("train", "--data", CHILD_BOOK, "--run-dir", "new", *args)
    assert result.exit_code == 0, result.stderr
    return seen["config"]


def test_fine_tuning_defaults_and_what_comes_from_the_parent(parent, parent_run, monkeypatch):
    config = captured_config(monkeypatch, "--init", NAME)
    assert config.train.learning_rate == FINETUNE_LEARNING_RATE
    # The parent's windows (64 characters) with the default 64 of them: 9.4 passes at 300 steps.
    assert config.data.seq_length == 64
    assert config.train.steps == round(FINETUNE_CHARACTERS / (64 * config.train.batch_size))
    assert dataclasses.replace(config.model, vocab_size=0, bar_ids=()) == TINY_MODEL
    assert config.init == InitConfig(f"bundled:{NAME}")

    config = captured_config(monkeypatch, "--init", parent_run, "--steps", 50, "--learning-rate",
                             0.01, "--dropout", 0.3, "--units", 32)  # fmt: skip
    assert (config.train.steps, config.train.learning_rate, config.model.dropout) == (50, 0.01, 0.3)
    assert config.init == InitConfig(str(parent_run))


def test_init_from_a_run_directory_starts_from_its_best_checkpoint(
    parent_run, child_tunes, tmp_path
):
    messages: list[str] = []
    config = child_config(2, parent=str(parent_run))
    train(config, split_corpus(child_tunes, config.data),
          tmp_path / "ft", progress=False, log=messages.append)
    best = sorted((parent_run / "best").glob("ckpt-*.index"))[0].stem
    assert f"fine-tuning from {parent_run} (its step {best[5:]})" in "\n".join(messages)


def test_misuse_of_init_is_one_line_and_writes_nothing(parent_copy, parent_run, tmp_path):
    def refused(*args: str, fragment: str) -> None:
        one_line_error(invoke("train", "--data", CHILD_BOOK, "--run-dir", "x", *args), fragment)
        assert not Path("x").exists()

    refused("--init", "nowhere", fragment="nowhere: no such run directory or bundled model")
    refused("--init", NAME, "--units", 64, fragment="--units 64 contradicts --init bundled:")
    refused("--init", NAME, "--model", "transformer", fragment="--model transformer contradicts")
    refused("--init", parent_run, "--layers", 2, fragment="--layers 2 contradicts --init")

    damaged = tmp_path / "damaged"
    shutil.copytree(parent_run, damaged)
    for data in damaged.glob("*/ckpt-*.data-*"):
        data.write_bytes(data.read_bytes()[:20])
    refused("--init", damaged, fragment="no intact checkpoint")
    (damaged / "config.json").write_text("{not json")
    refused("--init", damaged, fragment="config.json: not valid JSON")

    weights = parent_copy / "weights.npz"
    weights.write_bytes(weights.read_bytes()[:100])
    refused("--init", NAME, fragment="weights.npz: damaged")

    result = invoke("train", "--data", CHILD_BOOK, "--run-dir", parent_run, "--resume", "--init",
                    parent_run)  # fmt: skip
    one_line_error(result, "contradicts the run being resumed (trained from scratch")
    with pytest.raises(CheckpointError, match="was not fine-tuned from"):
        train(child_config(2), split_corpus(load_corpus([CHILD_BOOK])[0], child_config(2).data),
              parent_run, resume=True,
              progress=False, log=lambda _: None)  # fmt: skip
