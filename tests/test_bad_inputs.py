"""Every bad input of issue 5, through the command line as a user meets it: one line on stderr
naming the input and what to do, and a non-zero exit; or, when it is one item of many, skipped
and counted. Then random text and bytes thrown at the ABC reader."""

from __future__ import annotations

import codecs
import json
import shutil
from pathlib import Path

import pytest
from cli_checks import MICRO_RUN, one_line_error
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from run_checks import training_fixture

from musicgen.cli import main
from musicgen.data.corpus import load_corpus, music21_corpus_folder
from musicgen.errors import ParseError
from musicgen.music.abc import header_fields, parse_tune, read_text_file, split_tunebook

TUNEBOOK = Path(__file__).parent / "data" / "abc" / "tunebook.abc"  # 4 good tunes, 3 broken
ONEILLS = music21_corpus_folder() / "oneills1850/0001-0050.abc"
GOOD_TUNE = "X:1\nT:The Kesh\nM:6/8\nL:1/8\nK:G\n|:GAG GAB|ABA ABd|edd gdd|edB dBA:|\n"
TINY = [*MICRO_RUN, "--steps", "1", "--eval-every", "1", "--checkpoint-every", "1"]


def train_on(tmp_path: Path, *data: Path):
    args = ["train", "--run-dir", str(tmp_path / "run")]
    for path in data:
        args += ["--data", str(path)]
    return CliRunner().invoke(main, [*args, *TINY])


def write(path: Path, content: str | bytes, encoding: str = "utf-8") -> Path:
    path.write_bytes(content if isinstance(content, bytes) else content.encode(encoding))
    return path


# --- corpus files, each alone: one line, non-zero exit, nothing written ---------------------------

SINGLE_BAD_FILES = {
    "empty file": (b"", "no tune found (no X: line); start each tune with X:"),
    "binary file named .abc": (
        bytes(range(256)) * 4,
        "not a text file (it holds NUL bytes); remove it or pass ABC text files only",
    ),
    "tune without X:": ("T:No Number\nM:6/8\nK:G\n|:GAG GAB|ABA ABd:|\n", "no X: line"),
    "tune without K:": ("X:7\nT:No Key\nM:6/8\n|:GAG GAB|ABA ABd:|\n", "#X:7: no K: (key) field"),
    "header cut off before K: (end of file)": ("X:8\nT:Cut Off\nM:6/8\nL:1/", "#X:8: no K:"),
    "K: field without a value": ("X:9\nT:Empty Key\nK:\n|:GAG GAB:|\n", "add one such as K:D"),
    "header only, no notes": ("X:4\nT:Silence\nK:D\n% nothing here\n", "#X:4: no notes"),
    "a 1 MB line without any tune": ("~" * 1_000_000 + "\n", "no tune found (no X: line)"),
    "UTF-16 cut short": (
        codecs.BOM_UTF16_LE + GOOD_TUNE.encode("utf-16-le")[:-1],
        "UTF-16 text cut short or damaged (truncated data at byte",
    ),
}


@pytest.mark.parametrize("name", list(SINGLE_BAD_FILES))
def test_a_bad_corpus_file_alone_is_one_clear_line(tmp_path, name):
    content, fragment = SINGLE_BAD_FILES[name]
    path = write(tmp_path / "tunes.abc", content)
    line = one_line_error(train_on(tmp_path, path), str(path), fragment)
    assert "no usable tune" in line
    assert not (tmp_path / "run").exists()


def test_a_nonexistent_path_is_one_clear_line(tmp_path):
    one_line_error(
        train_on(tmp_path, tmp_path / "nowhere.abc"), "nowhere.abc", "check the --data path"
    )


def test_an_empty_folder_is_one_clear_line(tmp_path):
    (tmp_path / "empty").mkdir()
    one_line_error(
        train_on(tmp_path, tmp_path / "empty"), str(tmp_path / "empty"), "folder holds no .abc"
    )


def test_a_folder_of_only_bad_files_is_one_line_with_the_counts(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    write(folder / "a.abc", b"")
    write(folder / "b.abc", b"\0\1\2")
    write(folder / "c.abc", "X:1\nK:G\n")
    one_line_error(
        train_on(tmp_path, folder), "no usable tune in 3 files", "binary 1", "no-tunes 1"
    )


# --- corpus files among good ones: skipped and counted -------------------------------------------


def latin1_tunebook() -> str:
    return (
        "X:1\nT:Slán Go Fóill\nM:6/8\nL:1/8\nK:G\n|:GAG GAB|ABA ABd|edd gdd|edB dBA:|\n\n"
        "X:2\nT:Cé Hé Sin\nM:6/8\nL:1/8\nK:D\n|:dAF AFA|dAF ABc|dAF AFA|GEF GFE:|\n"
    )


@pytest.fixture
def mixed_folder(tmp_path) -> Path:
    """Good tunebooks, each kind of bad file, and a book half of whose tunes are broken."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    shutil.copy(ONEILLS, folder / "oneills.abc")
    write(folder / "empty.abc", b"")
    write(folder / "binary.abc", bytes(range(256)))
    write(folder / "latin1.abc", latin1_tunebook(), "latin-1")
    write(folder / "bom.abc", codecs.BOM_UTF8 + GOOD_TUNE.replace("Kesh", "Kesh BOM").encode())
    half = [GOOD_TUNE.replace("X:1", f"X:{n}").replace("GAG", "GA" + "ABCDEF"[n]) for n in range(3)]
    half += ["X:10\nT:No Key\n|:GAG:|\n", "X:11\nT:No Notes\nK:G\n", "X:12\nT:Cut\nM:6/8\nL:"]
    write(folder / "half-broken.abc", "\n".join(half))
    return folder


@pytest.mark.slow
def test_bad_files_and_tunes_among_good_ones_are_skipped_and_counted(mixed_folder, tmp_path):
    result = train_on(tmp_path, mixed_folder)
    assert result.exit_code == 0, result.stderr
    summary = result.stderr.splitlines()[:2]
    # 50 O'Neill tunes + 2 Latin-1 + 1 BOM + 3 good of half-broken = 56.
    assert summary[0] == (
        "read 59 tunes from 6 files: kept 56, skipped 3 (no-key 2, no-notes 1)"
    ), summary
    assert summary[1] == "skipped 2 files (binary 1, no-tunes 1)"
    vocab = json.loads((tmp_path / "run" / "vocab.json").read_text())["characters"]
    assert "\ufeff" not in vocab and "\ufffd" not in vocab  # no BOM, no undecodable bytes


def test_latin1_and_utf8_with_bom_read_as_the_same_text(tmp_path):
    latin1 = write(tmp_path / "latin1.abc", latin1_tunebook(), "latin-1")
    utf8 = write(tmp_path / "utf8.abc", latin1_tunebook())
    bom = write(tmp_path / "bom.abc", codecs.BOM_UTF8 + latin1_tunebook().encode())
    texts = [[t.text for t in load_corpus([path])[0]] for path in (latin1, utf8, bom)]
    assert texts[0] == texts[1] == texts[2]
    assert texts[0][0].startswith("X:1\nT:Slán Go Fóill\n")
    # And through the CLI: render names the files after the accented titles, folded to ASCII.
    result = CliRunner().invoke(main, ["render", str(latin1), "--no-audio"])
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in tmp_path.glob("*.mid")) == [
        "latin1-Ce_He_Sin.mid",
        "latin1-Slan_Go_Foill.mid",
    ]


def test_render_of_a_half_broken_tunebook_renders_the_good_half_and_counts_the_rest(tmp_path):
    book = tmp_path / "book.abc"
    shutil.copy(TUNEBOOK, book)
    result = CliRunner().invoke(main, ["render", str(book), "--no-audio"])
    assert result.exit_code == 0, result.stderr
    assert f"{book}: skipped 2 unusable tune(s) (no-key 1, no-notes 1)" in result.stderr
    assert len(list(tmp_path.glob("*.mid"))) == 5  # 4 good tunes and the duplicate of X:2


def test_a_1mb_line_among_good_tunes_is_read_whole(tmp_path):
    long_line = "|" + "GAG GAB|" * 131_072  # 1 MiB of music on one line
    write(tmp_path / "long.abc", f"X:1\nT:Endless\nM:6/8\nL:1/8\nK:G\n{long_line}\n")
    shutil.copy(TUNEBOOK, tmp_path / "book.abc")
    tunes, report = load_corpus([tmp_path])
    assert report.kept == 5 and [t.title for t in tunes][-1] == "Endless"
    assert tunes[-1].text.endswith(long_line + "\n")


def test_unterminated_fields_parse_without_crashing():
    odd = 'X:2\nT:Odd\nK:G\n[M:3/4 GAG "Am GAB [K:D ABA !trill ABd +fermata\n'
    assert parse_tune(odd, "odd.abc").key == "G"  # stray brackets and quotes are kept as written


# --- a run directory that is incomplete, from another version, or does not fit its weights -------


@training_fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A real (tiny, one-step) run trained through the CLI on O'Neill's first 50 tunes."""
    root = tmp_path_factory.mktemp("bad-inputs")
    result = CliRunner().invoke(
        main, ["train", "--run-dir", str(root / "run"), "--data", str(ONEILLS), *TINY]
    )
    assert result.exit_code == 0, result.stderr
    return root / "run"


@pytest.fixture
def broken_run(run_dir, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    return copy


def generate(run: Path, *options: str):
    out = run.parent / "out"
    return CliRunner().invoke(
        main, ["generate", "--run-dir", str(run), "--out", str(out), "--no-audio", *options]
    )


@pytest.mark.parametrize("name", ["config.json", "vocab.json"])
def test_a_run_directory_missing_a_file_is_one_clear_line(broken_run, name):
    (broken_run / name).unlink()
    one_line_error(generate(broken_run), name, "missing; is this a musicgen run directory?")


def test_a_run_directory_without_checkpoints_is_one_clear_line(broken_run):
    shutil.rmtree(broken_run / "ckpt")
    shutil.rmtree(broken_run / "best")  # the best checkpoint alone would do for generate
    one_line_error(generate(broken_run), "ckpt", "no checkpoint; train the model first")


def test_a_run_directory_from_another_version_is_one_clear_line(broken_run):
    config = json.loads((broken_run / "config.json").read_text())
    config["version"] = 99
    (broken_run / "config.json").write_text(json.dumps(config))
    one_line_error(generate(broken_run), "config.json", "version 99", "retrain or use the musicgen")
    vocab = json.loads((broken_run / "vocab.json").read_text())
    vocab["version"] = 7
    (broken_run / "vocab.json").write_text(json.dumps(vocab))
    config["version"] = 1
    (broken_run / "config.json").write_text(json.dumps(config))
    one_line_error(generate(broken_run), "vocab.json", "vocabulary version 7")


def test_a_config_json_that_is_not_json_is_one_clear_line(broken_run):
    (broken_run / "config.json").write_text("{ not json")
    one_line_error(generate(broken_run), "config.json", "not valid JSON")


def test_a_vocabulary_that_does_not_fit_the_weights_is_one_clear_line(broken_run):
    vocab = json.loads((broken_run / "vocab.json").read_text())
    vocab["characters"].append("\u00e9")
    (broken_run / "vocab.json").write_text(json.dumps(vocab))
    one_line_error(generate(broken_run), "vocab.json", "different runs")
    config = json.loads((broken_run / "config.json").read_text())
    config["model"]["vocab_size"] += 1
    (broken_run / "config.json").write_text(json.dumps(config))
    one_line_error(generate(broken_run), "vocabulary does not match the weights")


def test_resuming_with_another_vocabulary_is_one_clear_line(broken_run, tmp_path):
    other = write(tmp_path / "other.abc", GOOD_TUNE.replace("The Kesh", "Caf\u00e9"))
    args = ["train", "--run-dir", str(broken_run), "--resume", "--data", str(other)]
    result = CliRunner().invoke(main, [*args, "--steps", "2"])
    one_line_error(result, "vocab.json", "lacks: '\u00e9'")


# --- generation settings and seeds ---------------------------------------------------------------

BAD_SETTINGS = {
    "--num 0": (["--num", "0"], "Invalid value for '--num': 0 is not in the range 1<=x"),
    "negative temperature": (["--temperature", "-0.5"], "'--temperature': -0.5 is not in"),
    "zero temperature": (["--temperature", "0"], "'--temperature': 0.0 is not in the range 0<x"),
    "--top-p 0": (["--top-p", "0"], "'--top-p': 0.0 is not in the range 0<x<=1"),
    "--top-p 1.5": (["--top-p", "1.5"], "'--top-p': 1.5 is not in the range 0<x<=1"),
    "--top-k above the vocabulary": (["--top-k", "1000"], "top_k must be between 0 (off)"),
    "--top-k past any vocabulary": (["--top-k", "100000"], "'--top-k': 100000 is not in the range"),
    "negative --top-k": (["--top-k", "-1"], "'--top-k': -1 is not in the range 0<=x"),
    "seed outside the vocabulary": (
        ["--seed", "X:1\\nK:G\\n\u2603\u00df"],
        "the seed has characters the model's vocabulary lacks: '\u2603', '\u00df'",
    ),
    "missing seed file": (["--seed", "nowhere.abc"], "seed file nowhere.abc does not exist"),
    "max length not above the seed": (
        ["--seed", "X:1\\nK:G\\nGAG", "--max-length", "5"],
        "max_length 5 must exceed the seed's length",
    ),
}


@pytest.mark.parametrize("name", list(BAD_SETTINGS))
def test_a_bad_generation_setting_is_one_clear_line(run_dir, tmp_path, name):
    options, fragment = BAD_SETTINGS[name]
    one_line_error(generate(run_dir, *options), fragment)
    assert not (run_dir.parent / "out").exists()  # nothing was written


def test_a_seed_file_without_a_tune_is_one_clear_line(run_dir, tmp_path):
    seed = write(tmp_path / "seed.abc", "T:Only a title\n")
    one_line_error(generate(run_dir, "--seed", str(seed)), "seed.abc", "holds no usable tune")


def test_an_out_path_that_is_a_file_is_one_clear_line(run_dir, tmp_path):
    blocker = write(tmp_path / "out-file", "keep me")
    result = CliRunner().invoke(
        main, ["generate", "--run-dir", str(run_dir), "--out", str(blocker), "--no-audio"]
    )
    one_line_error(result, str(blocker), "not a folder")
    assert blocker.read_text() == "keep me"


# --- random input thrown at the ABC reader: nothing escapes but ParseError -----------------------

ABC_ALPHABET = st.sampled_from(
    [*"XTKMLQPVUmw:|[]()\"!+%\\/=^_,'<>-0123456789 \t\r\nABCDEFGabcdefgzx`{}~", "\u00e9", "\0"]
)
ABC_TEXT = st.one_of(st.text(), st.text(alphabet=ABC_ALPHABET, max_size=400))


def check_tune(tune) -> None:
    assert tune.text.endswith("\n") and "\n\n" not in tune.text
    lines = tune.text.splitlines()
    assert lines[0].startswith("X:") and any(line.startswith("K:") for line in lines)


@settings(max_examples=300, deadline=None)
@given(ABC_TEXT)
def test_random_text_gives_tunes_or_parse_errors_only(text):
    tunes, errors = split_tunebook(text, "random.abc")
    for tune in tunes:
        check_tune(tune)
    assert all(isinstance(error, ParseError) and error.reason for error in errors)
    try:
        check_tune(parse_tune(text, "random.abc"))
    except ParseError as error:
        assert error.reason in {"no-key", "no-notes"}
    assert isinstance(header_fields(text), dict)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.sampled_from([b"", codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE]),
    st.one_of(
        st.binary(max_size=600),
        ABC_TEXT.map(lambda text: text.encode("utf-8")),
        ABC_TEXT.map(lambda text: text.encode("utf-16-le", "surrogatepass")),
    ),
)
def test_random_bytes_in_a_file_give_text_or_a_parse_error_only(tmp_path, start, data):
    """Found a real escape: a UTF-16 file cut short raised UnicodeDecodeError."""
    path = tmp_path / "random.abc"
    path.write_bytes(start + data)
    try:
        text = read_text_file(path)
    except ParseError as error:
        assert error.reason == "binary" and str(path) in str(error)
        return
    assert isinstance(text, str)
    split_tunebook(text, str(path))



