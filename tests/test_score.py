"""Sheet music: real corpus tunes engraved and read back, the engraver's crash isolation, a fuzz."""

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from musicgen.data.corpus import default_corpus_files
from musicgen.errors import RenderError
from musicgen.music.abc import read_text_file, split_tunebook
from musicgen.music.render import abc_to_performance
from musicgen.music.score import (
    CRASHED,
    TIMED_OUT,
    Engraver,
    ScoreResult,
    count_notes,
    engrave,
    engraving_text,
)

# A stray "]" kills raw verovio 6.4.1 (checked below in a subprocess), on our safe text too: no
# rule of `engraving_text` mends it, so `engrave` meets a real crash.
CRASHES_VEROVIO = "X:1\nT:Stray bracket\nK:D\nA]B|\n"
_RAW_VEROVIO = """
import sys, verovio
verovio.enableLog(verovio.LOG_OFF)
toolkit = verovio.toolkit()
toolkit.setOptions({"inputFrom": "abc"})
toolkit.loadData(sys.stdin.read())
toolkit.renderToSVG(1)
print("survived")
"""


@pytest.fixture(scope="module")
def corpus_tunes():
    """Tunes of two bundled collections: O'Neill's (dance tunes) and Aird's (airs)."""
    tunes = []
    for label, path in default_corpus_files():
        if "oneills1850/0001-0050" in label or "airdsAirs/book1" in label:
            tunes += split_tunebook(read_text_file(path), label)[0]
    assert len(tunes) > 100
    return tunes


@pytest.fixture(scope="module")
def engraver():
    with Engraver() as shared:
        yield shared


def _body(text: str) -> str:
    return text.split("\nK:", 1)[1].split("\n", 1)[1]


def _plays_as_written(text: str) -> bool:
    """No repeat, ending or part order: our renderer plays every written note once."""
    body = _body(text)
    return ":" not in body and not re.search(r"[\[|]\d", body) and "\nP:" not in text


def test_note_heads_match_the_notes_our_renderer_plays(corpus_tunes, engraver):
    tunes = [t for t in corpus_tunes if _plays_as_written(t.text)][:40]
    assert len(tunes) >= 20
    for tune, result in zip(tunes, engraver.engrave([t.text for t in tunes])):
        assert result.reason == "" and result.svg is not None, (tune.source, result.reason)
        root = ElementTree.fromstring(result.svg)  # well-formed XML
        heads = sum(1 for e in root.iter() if "note" in e.get("class", "").split())
        assert heads == result.notes == count_notes(result.svg)
        played = len(abc_to_performance(tune.text).notes)
        body = _body(tune.text)
        # Grace notes are engraved but not played; a tied note is two heads but one sound.
        graces = sum(len(re.findall(r"[A-Ga-g]", g)) for g in re.findall(r"\{[^}]*\}", body))
        ties = re.sub(r'"[^"]*"', "", body).count("-")
        assert played <= heads - graces <= played + ties, tune.source


def test_most_tunes_with_repeats_engrave_with_every_written_note(corpus_tunes, engraver):
    """With repeats our renderer plays some notes twice: the heads lie between written and
    played counts, and no tune is lost."""
    tunes = [t for t in corpus_tunes if not _plays_as_written(t.text)][:60]
    results = engraver.engrave([t.text for t in tunes])
    assert all(r.svg is not None for r in results), [r.reason for r in results if r.reason]
    for tune, result in zip(tunes, results):
        try:
            played = len(abc_to_performance(tune.text).notes)
        except RenderError:
            continue
        assert 0 < result.notes <= played + 2 * _body(tune.text).count("{") + 200


def test_the_title_key_and_meter_are_engraved_and_text_is_escaped(engraver):
    text = 'X:1\nT:<script>alert("x")</script> & Co\nM:6/8\nL:1/8\nK:D\nABc def|\n'
    (result,) = engraver.engrave([text])
    assert result.notes == 6
    assert "<script" not in result.svg
    assert "&lt;script&gt;" in result.svg
    assert 'class="meterSig"' in result.svg and 'class="keySig"' in result.svg


def test_raw_verovio_really_dies_on_the_crash_tune():
    child = subprocess.run(
        [sys.executable, "-c", _RAW_VEROVIO],
        input=engraving_text(CRASHES_VEROVIO),
        capture_output=True,
        text=True,
    )
    assert child.returncode < 0, child.stdout  # killed by a signal, no Python exception
    assert "survived" not in child.stdout


def test_a_crashing_tune_costs_only_itself(engraver):
    """One call: the tunes before and after the crash tune still engrave; later calls too."""
    good = "X:1\nT:Good\nM:4/4\nL:1/8\nK:G\nGABc dedB|\n"
    restarts = engraver.restarts
    results = engraver.engrave([good, CRASHES_VEROVIO, good, CRASHES_VEROVIO])
    assert [r.reason for r in results] == ["", CRASHED, "", CRASHED]
    assert [r.notes for r in results] == [8, 0, 8, 0]
    assert results[1].svg is None
    assert engraver.restarts == restarts + 2
    assert engraver.engrave([good])[0].notes == 8
    assert engrave([CRASHES_VEROVIO, good])[1].notes == 8  # the shared default engraver too


def test_the_engraver_restarts_after_the_worker_is_killed(engraver):
    good = "X:1\nT:Good\nK:D\nABcd|\n"
    assert engraver.engrave([good])[0].notes == 4
    engraver._worker.process.kill()
    engraver._worker.process.wait()
    results = engraver.engrave([good, good])
    assert [r.notes for r in results] == [4, 4]


def test_a_tune_over_its_time_limit_times_out_and_the_next_call_works():
    long_tune = "X:1\nT:Long\nM:4/4\nL:1/8\nK:D\n" + "ABcd efga|" * 3000 + "\n"
    with Engraver() as engraver:
        engraver.engrave(["X:1\nK:D\nA|\n"])  # worker started: its start-up is not timed
        (result,) = engraver.engrave([long_tune], timeout=0.001)
        assert result.svg is None and result.reason == TIMED_OUT
        assert engraver.engrave(["X:1\nK:D\nABc|\n"])[0].notes == 3


def test_texts_without_music_get_a_reason_without_reaching_verovio():
    with Engraver() as engraver:
        results = engraver.engrave(["", "   \n", "X:1\nT:No key\n", "x" * 200_000, "a\0b\nK:D\n"])
        assert all(r.svg is None and r.reason for r in results)
        assert engraver._worker is None  # nothing was sent


def test_the_worker_never_imports_tensorflow():
    code = (
        "import sys, musicgen.music.score; "
        "print(any(m.split('.')[0] in ('tensorflow', 'keras') for m in sys.modules))"
    )
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert child.stdout.strip() == "False", child.stderr


@pytest.mark.parametrize(
    "text, expected",
    [
        ("X:1\nK:D\nAB \\\ncd|\n", "X:1 \nK:D \nAB  cd| \n"),
        ("X:1\nK:D\n|!fed c2A|B3 !trill!g3|\n", "X:1 \nK:D \n| \nfed c2A|B3 !trill!g3| \n"),
        ("X:1\nK:D\n[f3a\n3] d|\n", "X:1 \nK:D \n[f3a 3] d| \n"),
        ("X:1\nK:D\nA2 :]\n", "X:1 \nK:D \nA2 :|] \n"),
        ("T:No number\nK:D\nABc\n", "X:1 \nT:No number \nK:D \nABc | \n"),
    ],
)
def test_engraving_text_rules(text, expected):
    assert engraving_text(text) == expected


def test_corpus_tunes_that_killed_raw_verovio_now_engrave(engraver):
    """O'Neill's 1784 (a backslash continuation), Aird's 143 (ABC 1.6 "!" line breaks) and
    Ryan's Lillibullero (":]") killed raw verovio even with a space at each line end."""
    wanted = ("oneills1850/1781-1800.abc#X:1784", "airdsAirs/book1.abc#X:0143",
              "ryansMammoth/LillibulleroOrProtestantBoys.abc#X:1")  # fmt: skip
    tunes = []
    for label, path in default_corpus_files():
        if any(label.endswith(source.split("#")[0]) for source in wanted):
            found = split_tunebook(read_text_file(path), label)[0]
            tunes += [t for t in found if any(t.source.endswith(w) for w in wanted)]
    assert len(tunes) == len(wanted)
    for tune, result in zip(tunes, engraver.engrave([t.text for t in tunes])):
        assert result.svg is not None and result.notes > 40, (tune.source, result.reason)


_ABC_CHARACTERS = "ABCDEFGabcdefgzx|:[]()\"!{}<>-=^_,'/123468 \n.~HTuvKLMXPQR%\\+#&*@$"
_HEADER = st.sampled_from(["X:1\n", "X:1\nT:t\nM:6/8\nL:1/8\nK:D\n", "X:1\nK:G\n", ""])
_BODY_TOKEN = st.sampled_from(
    ["A", "B2", "c/", "d>", "e<", "f'", "G,", "^F", "_B", "=c", "z2", "|", "||", "|:", ":|", "::",
     "[1", "[2", "|]", "[CEG]", "{g}", "(3", "(", ")", '"Am"', '"', "!trill!", "!", "-", "\\\n",
     "\n", " ", "[K:A]", "[M:3/4]", "[L:1/16]", "%c\n", "T:", "K:", "\r\n", "]", "[", "{", "}"]
)  # fmt: skip


@st.composite
def abc_like_texts(draw, tunes):
    """Random characters, ABC tokens in random order, or a real tune cut off anywhere and maybe
    mangled there (what a model stopped by --max-length writes)."""
    kind = draw(st.sampled_from(["characters", "tokens", "cut tune"]))
    if kind == "characters":
        return draw(st.text(alphabet=_ABC_CHARACTERS, max_size=120))
    if kind == "tokens":
        return draw(_HEADER) + "".join(draw(st.lists(_BODY_TOKEN, max_size=40)))
    text = draw(st.sampled_from(tunes)).text
    cut = draw(st.integers(1, len(text)))
    return text[:cut] + "".join(draw(st.lists(_BODY_TOKEN, max_size=3)))


_SOME_TUNES = [
    tune
    for label, path in default_corpus_files()
    if "oneills1850/0001-0050" in label
    for tune in split_tunebook(read_text_file(path), label)[0]
]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(texts=st.lists(abc_like_texts(_SOME_TUNES), min_size=1, max_size=6))
def test_fuzz_no_process_of_ours_dies(engraver, texts):
    results = engraver.engrave(texts)
    assert len(results) == len(texts)
    for result in results:
        assert isinstance(result, ScoreResult)
        assert (result.svg is None) == bool(result.reason)
        if result.svg is not None:
            assert result.notes == count_notes(result.svg) > 0
    # Whatever happened to the worker, the next tune engraves.
    assert engraver.engrave(["X:1\nK:D\nABc|\n"])[0].notes == 3


def test_the_report_shows_the_first_valid_tunes_that_engrave(corpus_tunes, tmp_path):
    from musicgen.evaluation.report import SCORE_TUNES, score_lines, write_scores

    texts = [CRASHES_VEROVIO, *(t.text for t in corpus_tunes[:5])]
    texts[2] = texts[2].replace("T:", "T:[Tricky](x) ", 1)
    scores = write_scores(texts, tmp_path)
    assert [name for _, name in scores] == [f"score-{i}.svg" for i in range(1, SCORE_TUNES + 1)]
    assert scores[0][0] == corpus_tunes[0].title  # the crash tune is skipped
    for _, name in scores:
        assert count_notes((tmp_path / name).read_text()) > 20
    lines = score_lines(scores)
    assert lines[0] == "## Sheet music of the first valid generated tunes"
    images = [line for line in lines if line.startswith("![")]
    assert [image.rsplit("](", 1)[1] for image in images] == [f"{n})" for _, n in scores]
    alt = images[1][2:].rsplit("](", 1)[0]
    assert alt.startswith("Score of Tricky") and not set(alt) & set("[]()")  # text, not Markdown
    assert score_lines([]) == []


def test_the_benchmark_reports_every_figure():
    script = Path(__file__).resolve().parent.parent / "bench" / "score.py"
    child = subprocess.run(
        [sys.executable, str(script), "--tunes", "30", "--batch", "10"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == 0, child.stderr
    figures = json.loads(child.stdout)
    assert figures["tunes"] == 30 and figures["engraved_share"] == 1.0
    assert figures["isolated"]["seconds_per_tune"] > 0
    assert figures["raw_verovio_in_process_safe_text"]["tunes"] == 30
    assert figures["raw_verovio_as_written_child_process"]["engraved_before_exit"] <= 30
