"""Bundled models: the float16 export, the loader, the CLI's use of them and the wheel that carries
them. A small model trained here on real O'Neill tunes is exported into a temporary folder that
MUSICGEN_BUNDLED_DIR points at; the models shipped in the package, if any, are checked too."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import mido  # noqa: E402
from cli_checks import invoke, one_line_error  # noqa: E402

from musicgen.config import DataConfig, ModelConfig, RunConfig, SampleConfig, TrainConfig  # noqa: E402
from musicgen.data.corpus import load_corpus, music21_corpus_folder  # noqa: E402
from musicgen.data.tune_split import split_corpus  # noqa: E402
from musicgen.data.vocab import BOS, EOS  # noqa: E402
from musicgen.errors import CheckpointError  # noqa: E402
from musicgen.generation.generate import Generator, generate_at_home  # noqa: E402
from musicgen.runs import bundled  # noqa: E402
from musicgen.runs.card import build_card, format_card  # noqa: E402
from musicgen.runs.checkpoint import load_for_inference  # noqa: E402
from musicgen.training.export import LOGIT_TOLERANCE, export_bundled  # noqa: E402
from musicgen.training.train import train  # noqa: E402
from musicgen.web.choices import model_choices  # noqa: E402

# Every test here trains a model, or uses one a fixture trained.
pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
TUNEBOOK = music21_corpus_folder() / "oneills1850/0001-0050.abc"
NAME = "tiny-lstm"
FILES = {"config.json", "vocab.json", "corpus.json", "card.json", "weights.npz"}
# Small enough to train in seconds, good enough that some tunes it writes render to MIDI.
SMALL = RunConfig(
    data=DataConfig(paths=(str(TUNEBOOK),), seq_length=64, whole_tunes=False),  # every bar seen
    model=ModelConfig(embedding_dim=16, units=96, layers=1, dropout=0.1),
    train=TrainConfig(
        steps=200, batch_size=32, learning_rate=3e-2, warmup_steps=5, eval_every=50,
        eval_batches=2, checkpoint_every=100, valid_sample=0, random_seed=7,
    ),
)  # fmt: skip
SAMPLE = SampleConfig(num=8, temperature=0.5, max_length=600, random_seed=1)


def folder_digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def tunes():
    return load_corpus([TUNEBOOK])[0]


@pytest.fixture(scope="module")
def run_dir(tunes, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "small"
    train(SMALL, split_corpus(tunes, SMALL.data), run, progress=False, log=lambda _: None)
    return run


@pytest.fixture(scope="module")
def bundled_root(run_dir, tunes, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bundled")
    export_bundled(run_dir, NAME, root=root, tunes=[t.text for t in tunes[:8]])
    return root


@pytest.fixture
def model_folder(bundled_root, monkeypatch, tmp_path) -> Path:
    """The exported model, found through MUSICGEN_BUNDLED_DIR; the test runs in an empty folder
    (no checkpoints/)."""
    monkeypatch.setenv(bundled.ENV_VAR, str(bundled_root))
    monkeypatch.chdir(tmp_path)
    return bundled_root / NAME


def exported_step(folder: Path) -> int:
    return json.loads((folder / "card.json").read_text())["exported_from"]["step"]


def npy_header(data: bytes) -> dict:
    """The header of one .npy member, read by hand: magic, version, then a Python-literal dict."""
    assert data[:6] == b"\x93NUMPY"
    length = int.from_bytes(data[8:10], "little")
    import ast

    return ast.literal_eval(data[10 : 10 + length].decode("latin1"))


def test_export_writes_json_and_float16_weights_only(model_folder, run_dir):
    assert {p.name for p in model_folder.iterdir()} == FILES
    with zipfile.ZipFile(model_folder / "weights.npz") as archive:
        assert archive.testzip() is None
        headers = {name: npy_header(archive.read(name)) for name in archive.namelist()}
    assert headers and all(h["descr"] == "<f2" for h in headers.values())
    assert "embedding/embeddings.npy" in headers and "logits/kernel.npy" in headers
    for name in ("config.json", "vocab.json", "corpus.json"):
        assert (model_folder / name).read_bytes() == (run_dir / name).read_bytes()
    card = json.loads((model_folder / "card.json").read_text())
    origin = card["exported_from"]
    best = sorted((run_dir / "best").glob("ckpt-*.index"))
    assert origin["checkpoint"] == "best" and best and origin["step"] == int(best[0].stem[5:])
    check = origin["float16_check"]
    assert check["tunes"] == 8 and 0 < check["max_logit_difference"] <= LOGIT_TOLERANCE
    assert abs(check["bits_per_char_float16"] - check["bits_per_char_float32"]) < 0.01
    assert card["name"] == NAME and card["model"]["family"] == "lstm"


def test_the_bundled_model_gives_the_runs_logits_within_the_tolerance(model_folder, run_dir):
    ours, vocab, _ = load_for_inference(model_folder)
    theirs, _, _ = load_for_inference(run_dir, checkpoint="best")
    assert all(w.dtype == "float32" for w in ours.weights)
    tune = load_corpus([music21_corpus_folder() / "oneills1850/0051-0100.abc"])[0][0].text
    ids = np.array([[BOS, *vocab.encode(tune, strict=False), EOS]], np.int32)
    np.testing.assert_allclose(
        ours.sequence_logits(ids).numpy(), theirs.sequence_logits(ids).numpy(),
        atol=LOGIT_TOLERANCE, rtol=0,
    )  # fmt: skip


def test_generate_with_no_run_uses_the_bundled_model_and_says_so(model_folder, tmp_path):
    options = ["--num", 8, "--temperature", 0.5, "--max-length", 600, "--random-seed", 1]
    result = invoke("generate", *options, "--out", "out", "--no-audio", "--no-score", "--json")
    assert result.exit_code == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"musicgen: using the bundled model {NAME} (no run under checkpoints/; see musicgen info "
        f"{NAME})"
    ]
    records = [json.loads(line) for line in result.stdout.splitlines()]
    model, vocab, config = load_for_inference(model_folder)
    assert config.data.common_root  # the default: tunes written at root C, then moved home
    expected = generate_at_home(Generator(model, vocab), "", SAMPLE, config, model_folder)
    texts = [Path(r["abc"]).read_text(encoding="utf-8").rstrip("\n") for r in records]
    assert texts == [text.rstrip("\n") for text in expected]  # the bundled weights wrote them
    midis = [r["midi"] for r in records if r["midi"]]
    assert midis, "none of 8 tunes rendered"
    for path in midis:
        notes = [m for m in mido.MidiFile(path).tracks[-1] if m.type == "note_on" and m.velocity]
        assert len(notes) > 8


def test_run_dir_takes_the_bundled_models_name_and_a_run_folder_of_that_name_wins(
    model_folder, run_dir, tmp_path
):
    assert bundled.model_folder(NAME) == model_folder
    assert bundled.model_folder("bundled") == model_folder  # the only one is the default
    assert bundled.model_folder(f"./{NAME}") == Path(f"./{NAME}")
    (tmp_path / NAME).mkdir()  # a folder of that name that is no model does not hide it
    assert bundled.model_folder(NAME) == model_folder
    shutil.copy(run_dir / "config.json", tmp_path / NAME / "config.json")
    assert bundled.model_folder(NAME) == Path(NAME)
    shutil.rmtree(tmp_path / NAME)
    result = invoke("generate", "--run-dir", NAME, "--num", 1, "--max-length", 40, "--out", "o",
                    "--no-audio", "--no-score")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"musicgen: loaded the bundled model {NAME} (float16 weights of step "
        f"{exported_step(model_folder)} of its training run; see musicgen info {NAME})"
    ]


def test_info_prints_the_bundled_models_card(model_folder):
    result = invoke("info", NAME)
    assert result.exit_code == 0, result.stderr
    text = result.stdout
    assert f"{NAME}: LSTM, 1 x 96 units" in text and "50 tunes" in text
    assert "exported from the best checkpoint" in text
    assert f"(step {exported_step(model_folder)})" in text
    assert f"musicgen evaluate --run-dir {NAME}" in text
    default = invoke("info", "--json")  # no run under checkpoints/: the bundled model's card
    assert json.loads(default.stdout)["bundled"] == NAME
    assert "using the bundled model" in default.stderr


def test_evaluate_a_bundled_model_leaves_the_package_alone(model_folder):
    before = folder_digest(model_folder)
    result = invoke("evaluate", "--run-dir", NAME, "--num", 2, "--max-length", 200, "--out", "ev")
    assert result.exit_code == 0, result.stderr
    assert "card stays as shipped" in result.stderr
    assert json.loads(Path("ev/evaluation.json").read_text())["checkpoint_kind"] == "bundled"
    assert folder_digest(model_folder) == before


def test_training_into_a_bundled_model_is_refused(model_folder, tunes):
    before = folder_digest(model_folder)
    one_line_error(invoke("train", "--run-dir", NAME, "--data", TUNEBOOK), "is the bundled model")
    one_line_error(
        invoke("train", "--run-dir", model_folder, "--resume"), f"--init {NAME} and a new --run-dir"
    )
    with pytest.raises(CheckpointError, match="never trains into"):
        train(SMALL, split_corpus(tunes, SMALL.data),
              model_folder, progress=False, log=lambda _: None)
    assert folder_digest(model_folder) == before


def test_without_a_bundled_model_generate_fails_as_before(monkeypatch, tmp_path):
    monkeypatch.setenv(bundled.ENV_VAR, "")
    monkeypatch.chdir(tmp_path)
    assert bundled.bundled_names() == [] and bundled.find_bundled("bundled") is None
    one_line_error(invoke("generate", "--out", "o"), "no trained run under checkpoints/")
    one_line_error(invoke("generate", "--run-dir", "bundled"), "has no bundled model")


def test_damaged_or_foreign_weights_are_one_line(model_folder, tmp_path):
    broken = tmp_path / "broken" / NAME
    shutil.copytree(model_folder, broken)
    weights = broken / "weights.npz"
    data = bytearray((model_folder / "weights.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside an array: the zip member's CRC no longer matches
    weights.write_bytes(bytes(data))
    one_line_error(invoke("generate", "--run-dir", broken, "--out", "o"), "weights.npz: damaged")
    weights.write_bytes(bytes(data[: len(data) // 3]))
    one_line_error(invoke("generate", "--run-dir", broken, "--out", "o"), "weights.npz: damaged")
    arrays = dict(np.load(model_folder / "weights.npz"))
    arrays["logits/bias"] = arrays["logits/bias"][:-1]
    np.savez(weights, **arrays)
    one_line_error(
        invoke("generate", "--run-dir", broken, "--out", "o"), "does not match the weights"
    )
    np.savez(weights, **{**arrays, "logits/bias": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(CheckpointError, match="damaged"):  # a pickle is never loaded
        bundled.read_weights(weights)


def test_export_refuses_to_overwrite_and_to_lose_precision(run_dir, tunes, tmp_path):
    texts = [t.text for t in tunes[:2]]
    first = export_bundled(run_dir, "m", root=tmp_path, tunes=texts)
    with pytest.raises(CheckpointError, match="already exists; pass --force"):
        export_bundled(run_dir, "m", root=tmp_path, tunes=texts)
    with pytest.raises(CheckpointError, match="more than the tolerance 0.0; not exported"):
        export_bundled(run_dir, "strict", root=tmp_path, tunes=texts, tolerance=0.0)
    with pytest.raises(CheckpointError, match="not a bundled model name"):
        export_bundled(run_dir, "bundled", root=tmp_path, tunes=texts)
    again = export_bundled(run_dir, "m", root=tmp_path, tunes=texts, force=True)
    assert again.folder == first.folder and {p.name for p in again.folder.iterdir()} == FILES
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary folder left


def test_the_script_exports_and_says_errors_in_one_line(run_dir, tmp_path):
    script = [sys.executable, str(REPO / "scripts/export_bundled.py")]
    why = "the smallest model that\n  plays"
    done = subprocess.run([*script, run_dir, "s", "--dest", tmp_path, "--tunes", TUNEBOOK,
                           "--why", why], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "the best checkpoint (step " in done.stdout and bundled.is_bundled_folder(tmp_path / "s")
    card = json.loads((tmp_path / "s" / "card.json").read_text())
    assert card["why"] == "the smallest model that plays"
    assert "why        the smallest model that plays" in format_card(build_card(tmp_path / "s"))
    done = subprocess.run([*script, run_dir, "s", "--dest", tmp_path],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 1 and done.stderr.strip().splitlines() == [
        f"export_bundled: error: {tmp_path / 's'}: already exists; pass --force to replace it"
    ]


def test_the_page_offers_the_bundled_model_first(model_folder, run_dir, tmp_path):
    runs = tmp_path / "checkpoints"
    shutil.copytree(run_dir, runs / "mine")
    ids = [choice.id for choice in model_choices(None, runs)]
    assert ids == [f"bundled:{NAME}", "run:mine"]
    assert [c.id for c in model_choices(model_folder, runs)] == ids  # asked for by name
    assert [c.id for c in model_choices(runs / "mine", runs)] == ["run:mine", f"bundled:{NAME}"]


# ------------------------------------------------------------------------------------------------
# The models shipped in the package, once there are any


def packaged_models() -> list[str]:
    folder = bundled.PACKAGE_FOLDER
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if bundled.is_bundled_folder(p))


@pytest.mark.parametrize("name", packaged_models() or [pytest.param("", marks=pytest.mark.skip(
    reason="no bundled model in the package yet"))])  # fmt: skip
def test_a_packaged_model_loads_and_writes_tunes_that_render(name, monkeypatch, tmp_path):
    monkeypatch.delenv(bundled.ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    folder = bundled.PACKAGE_FOLDER / name
    assert (folder / "weights.npz").stat().st_size <= bundled.MAX_WEIGHTS_BYTES
    assert {p.name for p in folder.iterdir()} <= FILES and "card.json" in os.listdir(folder)
    result = invoke("generate", "--run-dir", name, "--num", 2, "--out", "out", "--no-audio",
                    "--no-score", "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    import music21

    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 2 and any(r["valid"] for r in records)
    for record in records:
        score = music21.converter.parse(Path(record["abc"]).read_text(), format="abc")
        assert len(score.flatten().notes) > 8
        if record["midi"]:
            assert sum(m.type == "note_on" for m in mido.MidiFile(record["midi"]).tracks[-1])


# ------------------------------------------------------------------------------------------------
# The wheel


def checkout_copy(destination: Path) -> Path:
    """The checkout's files (tracked, and untracked but not ignored), copied to `destination`."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file() and not name.startswith(("checkpoints/", "data/")):
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


def build_wheel(source: Path, out: Path) -> Path:
    """`pip wheel` of `source`: without build isolation when this environment's setuptools can
    build the project offline, else in pip's isolated environment (which fetches setuptools)."""
    import setuptools

    isolation = [] if int(setuptools.__version__.split(".")[0]) >= 77 else None
    command = [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "-q", "-w", str(out)]
    done = subprocess.run(command + (["--no-build-isolation"] if isolation is not None else []),
                          cwd=source, capture_output=True, text=True, timeout=600)  # fmt: skip
    if done.returncode != 0 and isolation is None and "setuptools" in done.stderr:
        pytest.skip(f"cannot fetch setuptools>=77 to build the wheel: {done.stderr.strip()[-200:]}")
    assert done.returncode == 0, done.stderr
    (wheel,) = out.glob("musicgen-*.whl")
    return wheel


def test_the_wheel_carries_the_bundled_models_and_generates_from_them(model_folder, tmp_path):
    source = checkout_copy(tmp_path / "src")
    shipped = source / "musicgen/bundled_models"
    shutil.copytree(model_folder, shipped / NAME)
    wheel = build_wheel(source, tmp_path / "dist")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "site")
    for folder in (p for p in shipped.iterdir() if bundled.is_bundled_folder(p)):
        assert {f"musicgen/bundled_models/{folder.name}/{f}" for f in FILES} <= names
    assert not [n for n in names if n.startswith("musicgen/bundled_models/") and n.endswith(".py")]

    env = {k: v for k, v in os.environ.items() if k != bundled.ENV_VAR}
    env["PYTHONPATH"] = str(tmp_path / "site")
    (tmp_path / "empty").mkdir()
    code = "import musicgen, sys; print(musicgen.__file__); from musicgen.cli import run; run()"
    done = subprocess.run(
        [sys.executable, "-c", code, "generate", "--num", "1", "--max-length", "80",
         "--no-audio", "--no-score", "--out", "o"],
        cwd=tmp_path / "empty", env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith(str(tmp_path / "site"))
    assert "musicgen: using the bundled model" in done.stderr  # no checkpoints/ here
    assert list((tmp_path / "empty/o").glob("*.abc"))
