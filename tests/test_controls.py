"""Generation controls (--key, --meter, --type, --title) and sheet music through the CLI.

The library tests count headers of real corpus tunes; the CLI tests train a tiny model on
O'Neill's jigs 900-950 (every one R:Jig in 6/8, its header fields written X T M R L K) and drive
`generate` and `render` through click's CliRunner.
"""

import json
import shutil
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
from cli_checks import train_tiny
from click.testing import CliRunner

from musicgen.cli import main
from musicgen.data.controls import KnownHeaders, build_seed, known_headers
from musicgen.data.corpus import default_corpus_files
from musicgen.errors import GenerationError
from musicgen.generation.output import write_tunes
from musicgen.music.abc import header_fields, read_text_file, split_tunebook
from musicgen.music.score import count_notes

# Our renderer plays its one note; verovio reads the "X" that starts the music as a field.
PLAYS_BUT_DOES_NOT_ENGRAVE = "X:2\nT:Odd\nK:D\nX|A|\n"


def _corpus_file(fragment: str) -> Path:
    return next(path for label, path in default_corpus_files() if fragment in label)


@pytest.fixture(scope="module")
def jigs_file() -> Path:
    return _corpus_file("oneills1850/0900-0950")


@pytest.fixture(scope="module")
def bundled_known() -> KnownHeaders:
    texts = []
    for fragment in ("oneills1850/0900-0950", "oneills1850/0001-0050", "oneills1850/1176-1275"):
        texts += [t.text for t in split_tunebook(read_text_file(_corpus_file(fragment)), "x")[0]]
    return KnownHeaders.from_texts(texts)


# The library ------------------------------------------------------------------------------------


def test_known_headers_count_real_tunes(bundled_known):
    assert bundled_known.tunes > 200
    assert bundled_known.meters["6/8"] >= 51
    assert bundled_known.types["Jig"] >= 51
    assert bundled_known.units["6/8"]["1/8"] >= 51
    assert list(bundled_known.keys)[0] in ("G", "D")  # commonest first
    assert KnownHeaders.from_json(json.loads(json.dumps(bundled_known.to_json()))) == bundled_known


def test_the_header_follows_the_corpus_order(jigs_file):
    tunes = split_tunebook(read_text_file(jigs_file), "x")[0]
    known = KnownHeaders.from_texts(t.text for t in tunes)
    seed = build_seed(key="d", meter="6/8", tune_type="JIG", title="Test Jig", known=known)
    assert seed == "X:1\nT:Test Jig\nM:6/8\nR:Jig\nL:1/8\nK:D\n"
    assert split_tunebook(seed + "ABc def|\n", "seed")[0][0].key == "D"


def test_fields_a_later_one_needs_come_from_the_training_tunes(bundled_known):
    # A key alone needs M: and L: before it: the commonest meter of jigs, and its unit.
    seed = build_seed(key="G", tune_type="jig", known=bundled_known)
    assert header_fields(seed) == {"X": "1", "M": "6/8", "L": "1/8", "R": "Jig", "K": "G"}
    assert seed.startswith("X:1\nM:6/8\nL:1/8\n")  # XTMLRK is these tunes' commonest order
    assert build_seed(title="Only a title", known=bundled_known) == "X:1\nT:Only a title\n"
    assert build_seed(meter="6/8", known=bundled_known) == "X:1\nM:6/8\n"  # the model goes on
    assert build_seed(seed_text="X:1\nK:D\n", known=bundled_known) == "X:1\nK:D\n"  # no controls


def test_the_seed_header_and_opening_are_kept(bundled_known):
    seed = build_seed(key="D", title="Mine", seed_text="|:ABc dfe|", known=bundled_known)
    assert seed.startswith("X:1\nT:Mine\n") and seed.endswith("K:D\n|:ABc dfe|")
    merged = build_seed(key="D", seed_text="X:7\nT:Old\nM:6/8\nK:D\nABc|", known=bundled_known)
    assert merged == "X:7\nT:Old\nM:6/8\nK:D\nABc|"  # no L: added before music written without


@pytest.mark.parametrize(
    "controls, message",
    [
        ({"key": "H#"}, "--key H#: not a key the model's training tunes use; they use G, D"),
        ({"meter": "7/8"}, "--meter 7/8: not a meter the model's training tunes use; they use "),
        ({"tune_type": "polka"}, "--type polka: not a tune type the model's training tunes use"),
        (
            {"key": "G", "seed_text": "X:1\nM:6/8\nK:D\n"},
            "--key G clashes with the seed's header K:D",
        ),
        ({"meter": "3/4", "seed_text": "X:1\nM:6/8\n"}, "--meter 3/4 clashes with the seed's"),
        ({"title": "two\nlines"}, "--title must be one line"),
        ({"meter": "6/8", "seed_text": "ABc|"}, "needs a key; pass --key"),
    ],
)
def test_bad_values_are_one_line_naming_what_is_known(bundled_known, controls, message):
    with pytest.raises(GenerationError) as caught:
        build_seed(known=bundled_known, **controls)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_corpus_without_types_says_so():
    known = KnownHeaders.from_texts(["X:1\nT:a\nM:6/8\nL:1/8\nK:D\nABc|\n"])
    with pytest.raises(GenerationError, match="have no R: field"):
        build_seed(tune_type="reel", known=known)


# Files: the .svg beside the others ------------------------------------------------------------


def test_write_tunes_puts_an_svg_beside_each_tune(tmp_path, jigs_file):
    texts = [t.text for t in split_tunebook(read_text_file(jigs_file), "x")[0][:3]]
    texts.append("X:1\nT:Stray bracket\nK:D\nA]B|\n")  # kills verovio; invalid for us too
    records, _ = write_tunes(texts, tmp_path, audio=False)
    for record in records[:3]:
        svg = Path(record.svg)
        assert svg.parent == tmp_path and svg.stem == Path(record.abc).stem
        assert count_notes(svg.read_text()) > 50
        ElementTree.parse(svg)
    assert records[3].svg == "" and records[3].score_reason == "engraver crashed"
    assert Path(records[3].abc).is_file()  # its ABC is still written
    # Nothing is overwritten: the same tunes again get new names, each with its own score.
    again, _ = write_tunes(texts[:1], tmp_path, audio=False)
    assert again[0].svg != records[0].svg and Path(again[0].svg).is_file()
    assert not write_tunes(texts[:1], tmp_path, audio=False, score=False)[0][0].svg


def test_render_writes_scores_and_no_score_leaves_them_out(tmp_path, jigs_file):
    book = tmp_path / "jigs.abc"
    shutil.copy(jigs_file, book)
    result = CliRunner().invoke(main, ["render", str(book), "--no-audio", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.stderr
    svgs = sorted(tmp_path.glob("*.svg"))
    assert len(svgs) == 51 == len(list(tmp_path.glob("*.mid")))
    assert all(".svg" in line for line in result.stdout.splitlines())
    plain = tmp_path / "plain"
    args = ["render", str(book), "--no-audio", "--no-score", "--out", str(plain)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.stderr
    assert not list(plain.glob("*.svg")) and len(list(plain.glob("*.mid"))) == 51


def test_render_says_when_a_tune_has_no_score(tmp_path):
    book = tmp_path / "two.abc"
    book.write_text(f"X:1\nT:Fine\nK:D\nABcd|\n\n{PLAYS_BUT_DOES_NOT_ENGRAVE}")
    result = CliRunner().invoke(main, ["render", str(book), "--no-audio"])
    assert result.exit_code == 0, result.stderr
    fine, odd = result.stdout.splitlines()
    assert fine.endswith("two-Fine.svg") and (tmp_path / "two-Fine.svg").is_file()
    assert "two-Odd.mid" in odd and "(no score: verovio: " in odd
    assert (tmp_path / "two-Odd.mid").is_file() and not (tmp_path / "two-Odd.svg").exists()


# generate with a tiny model ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def jig_run(jigs_file, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "jigs"
    train_tiny(jigs_file, run, 20)
    return run


def _generate(run: Path, out: Path, *extra: str):
    args = ["generate", "--run-dir", str(run), "--num", "2", "--max-length", "200"]
    return CliRunner().invoke(main, [*args, "--out", str(out), "--no-audio", *extra])


@pytest.mark.slow
def test_train_records_the_header_values_and_generate_uses_them(jig_run, tmp_path):
    recorded = json.loads((jig_run / "corpus.json").read_text())["headers"]
    assert recorded["types"] == {"Jig": recorded["tunes"]} and "6/8" in recorded["meters"]
    args = ["--key", "D", "--meter", "6/8", "--type", "jig", "--title", "Test Jig", "--json"]
    result = _generate(jig_run, tmp_path, *args)
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 2
    for record in records:
        assert (
            Path(record["abc"])
            .read_text()
            .startswith("X:1\nT:Test Jig\nM:6/8\nR:Jig\nL:1/8\nK:D\n")
        )
        assert record["title"] == "Test Jig" and record["key"] == "D"
        if record["svg"]:
            svg = Path(record["svg"])
            assert svg.suffix == ".svg" and svg.stem == Path(record["abc"]).stem
            assert count_notes(svg.read_text()) > 0 and record["score_reason"] == ""
        else:
            assert record["score_reason"]


@pytest.mark.slow
def test_generate_writes_a_score_column_and_no_score_leaves_svgs_out(jig_run, tmp_path):
    # A whole tune as the seed and a few characters after it: a 20-step model's own music is
    # noise the engraver may refuse, and this test is about the score column, not the model.
    seed = r"X:1\nT:T\nM:6/8\nL:1/8\nK:G\n|:GAG GAB|ABA ABd|edd gdd|edB dBA:|\n"
    result = _generate(jig_run, tmp_path / "with", "--seed", seed, "--max-length", "75")
    assert result.exit_code == 0, result.stderr
    assert "score" in result.stdout.splitlines()[0]
    assert len(list((tmp_path / "with").glob("*.svg"))) == 2
    result = _generate(jig_run, tmp_path / "without", "--no-score", "--json")
    assert result.exit_code == 0, result.stderr
    assert not list((tmp_path / "without").glob("*.svg"))
    assert all(json.loads(line)["svg"] == "" for line in result.stdout.splitlines())


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra, message",
    [
        (["--key", "H"], "--key H: not a key the model's training tunes use; they use D, G"),
        (
            ["--meter", "3/4"],
            "--meter 3/4: not a meter the model's training tunes use; they use 6/8",
        ),
        (
            ["--type", "reel"],
            "--type reel: not a tune type the model's training tunes use; they use jig",
        ),  # fmt: skip
        (["--seed", r"X:1\nK:G\n", "--key", "D"], "--key D clashes with the seed's header K:G"),
        (["--title", "two\nlines"], "--title must be one line"),
    ],
)
def test_bad_control_values_are_one_line_and_a_non_zero_exit(jig_run, tmp_path, extra, message):
    result = _generate(jig_run, tmp_path, *extra)
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("musicgen: error: "), result.stderr
    assert message in lines[0]
    assert not list(tmp_path.glob("*.abc"))


@pytest.mark.slow
def test_an_older_run_without_the_record_counts_its_training_tunes_again(jig_run, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(jig_run, old)
    record = json.loads((old / "corpus.json").read_text())
    recorded = KnownHeaders.from_json(record.pop("headers"))
    (old / "corpus.json").write_text(json.dumps(record))
    assert known_headers(old) == recorded == known_headers(jig_run)
