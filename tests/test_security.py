"""Security: loading a run directory never runs code from it, and file names taken from tune
titles stay inside the output folder, avoid device names, are capped, and overwrite nothing
unless --force."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest
from cli_checks import MICRO_RUN
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from run_checks import training_fixture

import musicgen
from musicgen.cli import main
from musicgen.data.corpus import music21_corpus_folder
from musicgen.files import _RESERVED, MAX_STEM_LENGTH, safe_stem
from musicgen.generation.output import write_tunes

ONEILLS = music21_corpus_folder() / "oneills1850/0001-0050.abc"
TINY = [*MICRO_RUN, "--steps", "1", "--eval-every", "1", "--checkpoint-every", "1"]
STEM = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


# --- file names from tune titles -----------------------------------------------------------------


def assert_safe(stem: str) -> None:
    assert STEM.fullmatch(stem), stem
    assert len(stem) <= MAX_STEM_LENGTH
    assert stem.lower() not in _RESERVED


HOSTILE_TITLES = {
    "../../etc/passwd": "etc_passwd",
    "..": "tune",
    ".": "tune",
    "/": "tune",
    "": "tune",
    "C:\\Windows\\System32\\evil": "C_Windows_System32_evil",
    "CON": "CON_",
    "nul": "nul_",
    "Com1": "Com1_",
    "LPT9": "LPT9_",
    "com\u00b9": "com1_",  # a superscript one folds to 1: still the device COM1 on Windows
    "COM0": "COM0_",
    "CON.abc": "CON_abc",
    "-rf --no-preserve-root": "rf_--no-preserve-root",
    "tune\x00.abc\x00hidden": "tune_abc_hidden",
    "Sl\u00e1n Go F\u00f3ill": "Slan_Go_Foill",
    "\u6771\u4eac": "tune",
    "a" * 500: "a" * MAX_STEM_LENGTH,
}


@pytest.mark.parametrize("title", list(HOSTILE_TITLES))
def test_hostile_titles_give_safe_stems(title):
    stem = safe_stem(title)
    assert stem == HOSTILE_TITLES[title]
    assert_safe(stem)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=300), st.text(max_size=20))
def test_any_title_and_fallback_give_a_safe_stem_inside_the_folder(title, fallback):
    stem = safe_stem(title, fallback)
    assert_safe(stem)
    folder = Path("/srv/out")
    assert (folder / f"{stem}-12.abc").resolve().parent == folder


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(_RESERVED)), st.sampled_from(["", ".txt", " ", "..", ":"]))
def test_device_names_in_any_case_are_avoided(name, tail):
    assert_safe(safe_stem(name.upper() + tail))
    assert_safe(safe_stem(name.capitalize() + tail))


def tune(title: str, notes: str = "GAG GAB|ABA ABd") -> str:
    return f"X:1\nT:{title}\nM:6/8\nL:1/8\nK:G\n|:{notes}:|\n"


def test_written_files_stay_in_the_output_folder_whatever_the_titles(tmp_path):
    out = tmp_path / "out"
    titles = [t for t in HOSTILE_TITLES if "\n" not in t and t.strip()]
    records, _ = write_tunes([tune(title) for title in titles], out, audio=False)
    written = [Path(r.abc) for r in records] + [Path(r.midi) for r in records if r.midi]
    written += [Path(r.svg) for r in records if r.svg]
    assert all(path.resolve().parent == out.resolve() for path in written)
    assert {p.name for p in tmp_path.rglob("*") if p.is_file()} == {p.name for p in written}
    assert len({p.name.lower() for p in written}) == len(written)  # none overwrote another


def test_existing_files_are_kept_unless_force(tmp_path):
    out = tmp_path / "out"
    first, _ = write_tunes([tune("Kesh"), tune("Kesh", "dBA GAB")], out, audio=False)
    assert [Path(r.abc).name for r in first] == ["Kesh.abc", "Kesh-2.abc"]
    again, _ = write_tunes([tune("Kesh", "edd gdd")], out, audio=False)
    assert Path(again[0].abc).name == "Kesh-3.abc"
    assert "GAG GAB" in (out / "Kesh.abc").read_text()
    forced, _ = write_tunes(
        [tune("Kesh", "edd gdd"), tune("Kesh", "dBA dBA")], out, audio=False, force=True
    )
    # --force overwrites Kesh and Kesh-2, but the two new tunes never overwrite each other.
    assert [Path(r.abc).name for r in forced] == ["Kesh.abc", "Kesh-2.abc"]
    assert "edd gdd" in (out / "Kesh.abc").read_text()
    assert "dBA dBA" in (out / "Kesh-2.abc").read_text()


def test_render_keeps_existing_files_unless_force(tmp_path):
    folder = tmp_path / "books"
    folder.mkdir()
    book = folder / "book.abc"
    book.write_text(tune("../../escape") + "\n" + tune("CON", "dBA dBA"))
    runner = CliRunner()
    assert runner.invoke(main, ["render", str(book), "--no-audio"]).exit_code == 0
    assert runner.invoke(main, ["render", str(book), "--no-audio"]).exit_code == 0
    names = sorted(p.name for p in folder.glob("*.mid"))
    assert names == ["book-CON-2.mid", "book-CON.mid", "book-escape-2.mid", "book-escape.mid"]
    (folder / "book-escape.mid").write_bytes(b"stale")
    result = runner.invoke(main, ["render", str(book), "--no-audio", "--force"])
    assert result.exit_code == 0, result.stderr
    assert len(list(folder.glob("*.mid"))) == 4  # rewritten in place, nothing new
    assert (folder / "book-escape.mid").read_bytes().startswith(b"MThd")
    assert [p.name for p in tmp_path.iterdir()] == ["books"]  # nothing escaped the folder


@training_fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("security")
    args = ["train", "--run-dir", str(root / "run"), "--data", str(ONEILLS), *TINY]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.stderr
    return root / "run"


def test_generate_keeps_existing_files_unless_force(run_dir, tmp_path):
    out = tmp_path / "out"
    args = ["generate", "--run-dir", str(run_dir), "--out", str(out), "--no-audio", "--json"]
    args += ["--num", "2", "--max-length", "60", "--seed", r"X:1\nT:Same\nK:G\n"]
    runner = CliRunner()
    first = [json.loads(line)["abc"] for line in runner.invoke(main, args).stdout.splitlines()]
    second = [json.loads(line)["abc"] for line in runner.invoke(main, args).stdout.splitlines()]
    assert [Path(p).name for p in first] == ["Same.abc", "Same-2.abc"]
    assert [Path(p).name for p in second] == ["Same-3.abc", "Same-4.abc"]
    forced = runner.invoke(main, [*args, "--force"])
    assert [Path(json.loads(line)["abc"]).name for line in forced.stdout.splitlines()] == [
        "Same.abc",
        "Same-2.abc",
    ]
    assert len(list(out.glob("*.abc"))) == 4


# --- loading a run directory never runs code from it ----------------------------------------------

TRAPS = {
    # Each would write the marker file if anything unpickled, imported or executed it.
    "model.pkl": None,  # a pickle whose loading calls os.system
    "weights.npy": None,  # the same pickle, as numpy's allow_pickle would read it
    "model.keras": None,
    "sitecustomize.py": "import pathlib; pathlib.Path({marker!r}).write_text('ran')\n",
    "keras.py": "import pathlib; pathlib.Path({marker!r}).write_text('ran')\n",
    "musicgen.py": "import pathlib; pathlib.Path({marker!r}).write_text('ran')\n",
    "__init__.py": "import pathlib; pathlib.Path({marker!r}).write_text('ran')\n",
}

# Runs `musicgen generate` with an audit hook that records what Python does with the run
# directory: every file opened in it, anything unpickled, any code compiled or run from it.
AUDITED = r"""
import json, sys
run_dir, report = sys.argv[1], sys.argv[2]
events = []
def hook(event, args):
    if event == "open" and isinstance(args[0], str) and args[0].startswith(run_dir):
        events.append(["open", args[0]])
    elif event == "pickle.find_class":
        events.append([event, repr(args)[:200]])
    elif event == "exec" and run_dir in getattr(args[0], "co_filename", ""):
        events.append(["exec", args[0].co_filename])
    elif event == "compile" and run_dir in str(args[1]):
        events.append(["compile", str(args[1])])
    elif event == "import" and args[1] and str(args[1]).startswith(run_dir):
        events.append(["import", str(args[1])])
sys.addaudithook(hook)
from musicgen.cli import main
try:
    main(sys.argv[3:], prog_name="musicgen")
finally:
    open(report, "w").write(json.dumps(events))
"""


def plant_traps(run_dir: Path, marker: Path) -> None:
    payload = (
        b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
    )  # protocol 0 pickle of os.system("touch MARKER")
    for name, code in TRAPS.items():
        target = run_dir / name
        target.write_bytes(payload if code is None else code.format(marker=str(marker)).encode())
    (run_dir / "ckpt" / "model.pkl").write_bytes(payload)


@pytest.mark.slow
def test_generate_from_a_booby_trapped_run_runs_none_of_its_code(run_dir, tmp_path):
    trapped = tmp_path / "trapped"

    shutil.copytree(run_dir, trapped)
    marker = tmp_path / "MARKER"
    plant_traps(trapped, marker)
    report = tmp_path / "events.json"
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    args = ["generate", "--run-dir", str(trapped), "--out", str(tmp_path / "out"), "--no-audio"]
    done = subprocess.run(
        [sys.executable, "-c", AUDITED, str(trapped), str(report), *args, "--num", "1"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert not marker.exists()
    events = json.loads(report.read_text())
    assert [e for e in events if e[0] != "open"] == []
    opened = {Path(path).relative_to(trapped).as_posix() for _, path in events}
    # TensorFlow reads ckpt/ through C++; corpus.json holds the home keys of a common-root run.
    assert opened == {"config.json", "vocab.json", "corpus.json"}


def test_a_config_json_cannot_smuggle_in_objects(run_dir, tmp_path):

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    config["model"]["__class__"] = "os.system"
    (copy / "config.json").write_text(json.dumps(config))
    result = CliRunner().invoke(main, ["generate", "--run-dir", str(copy), "--no-audio"])
    assert result.exit_code == 1
    assert "unknown ModelConfig keys ['__class__']" in result.stderr
    assert result.stderr.count("\n") == 1


# --- and no code path that could: a scan of the package's own tokens ------------------------------

FORBIDDEN = {
    "pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "marshal",  # object loaders
    "eval", "exec", "__import__", "import_module",  # code from data
    "allow_pickle", "load_model", "safe_mode", "from_config", "yaml",
}  # fmt: skip
FORBIDDEN_ATTRIBUTES = {"saved_model", "load_weights"}  # tf.saved_model.load, model.load_weights


def test_the_package_names_no_unsafe_loader():
    """Alongside the behavioural test above: no name in musicgen's code (not its prose) that
    loads objects or runs code from data. `tf.train.Checkpoint` restores tensors only."""
    found = []
    for path in sorted(Path(musicgen.__file__).parent.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        tokens = [t for t in tokenize.generate_tokens(io.StringIO(text).readline) if t.string]
        for i, token in enumerate(tokens):
            attribute = i > 0 and tokens[i - 1].string == "."
            # numpy's npz files (the bundled models' weights) are read with pickle refused.
            refused = [t.string for t in tokens[i + 1 : i + 3]] == ["=", "False"]
            if token.string == "allow_pickle" and refused:
                continue
            if token.type == tokenize.NAME and (
                token.string in FORBIDDEN or (attribute and token.string in FORBIDDEN_ATTRIBUTES)
            ):
                found.append(f"{path.name}:{token.start[0]}: {token.string}")
    assert found == []
