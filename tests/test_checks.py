"""Validity checks, statistics and novelty on real tunes, each against a hand-checkable change or an
independent reader (music21, abc2midi); and the calibration: every headline check passes at least
99% of the bundled corpus."""

from __future__ import annotations

import shutil
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest

from musicgen.data.corpus import load_corpus
from musicgen.evaluation import checks, novelty, stats
from musicgen.music.abc import parse_tune, read_text_file, split_tunebook

DATA = Path(__file__).resolve().parent / "data"
NORTHERN_LASSES = parse_tune(
    read_text_file(DATA / "render" / "northern_lasses_oneills_1532.abc"), "northern lasses"
).text
TUNEBOOK = split_tunebook(read_text_file(DATA / "abc" / "tunebook.abc"), "tunebook")[0]


def body_lines(text: str) -> tuple[list[str], list[str]]:
    lines = text.splitlines()
    key = next(i for i, line in enumerate(lines) if line.startswith("K:"))
    return lines[: key + 1], lines[key + 1 :]


def test_a_real_tune_passes_every_headline_check():
    results, tune = checks.check_tune(NORTHERN_LASSES)
    assert results == dict.fromkeys(checks.HEADLINE_CHECKS)
    assert tune.key == "G" and tune.meter == "C|"
    # Counted by hand: 15 whole bars of C|, and four short ones: the triplet pickup ((3def)
    # (three eighths in the time of two), the bar before the first ||, the second part's pickup
    # (Bd), and the second ending, each short bar beside a section line.
    assert sum(bar.length == 1 for bar in tune.bars) == 15
    short = [bar.length for bar in tune.bars if bar.length != 1]
    assert short == [Fraction(1, 4), Fraction(3, 4), Fraction(1, 4), Fraction(3, 4)]
    assert checks.bars_off(tune) == ([], 19)


def test_header_check_names_the_missing_fields():
    without_title = "\n".join(line for line in NORTHERN_LASSES.splitlines() if line[:2] != "T:")
    assert checks.check_header(without_title) == "no T: in the header"
    without_meter = without_title.replace("M:C|\n", "")
    assert checks.check_header(without_meter) == "no T:, M: in the header"
    # L: may be left out: ABC gives it a default.
    assert checks.check_header(NORTHERN_LASSES.replace("L:1/8\n", "")) is None


def test_pitch_class_histogram_matches_music21():
    music21 = pytest.importorskip("music21")
    score = music21.converter.parse(NORTHERN_LASSES, format="abc")
    expected = Counter()
    for element in score.recurse().notes:
        if isinstance(element, music21.harmony.ChordSymbol) or element.duration.isGrace:
            continue
        for pitch in element.pitches:
            expected[stats.PITCH_CLASSES[pitch.pitchClass]] += 1
    tune = checks.read_written(NORTHERN_LASSES)
    histogram = stats.distributions([tune])["pitch_class"]
    total = sum(expected.values())
    assert len(tune.notes) == total
    for name in stats.PITCH_CLASSES:
        assert histogram[name] == pytest.approx(expected[name] / total), name
    # Key G: every note is in the scale except none (this reel has no accidentals).
    assert all(note.in_scale for note in tune.notes)


def test_broken_bar_is_found_and_too_many_fail_the_tune():
    header, body = body_lines(NORTHERN_LASSES)
    # Bar 3 ("cBAG FGAB") gets one eighth too many.
    broken = body[0].replace("cBAG FGAB", "cBAG FGABc", 1)
    tune = checks.read_written("\n".join([*header, broken, *body[1:]]))
    off, checked = checks.bars_off(tune)
    assert off == [3]  # 0-based: the pickup is bar 0
    assert tune.bars[3].length == Fraction(9, 8)
    assert checks.check_bars(tune) is None  # one slip in 18 bars is allowed, as in real tunes
    # Every other bar a note short: far beyond a slip.
    damaged = [line.replace("G ", " ") for line in body]
    tune = checks.read_written("\n".join([*header, *damaged]))
    assert checks.check_bars(tune).startswith(f"{len(checks.bars_off(tune)[0])} of ")


def test_meter_change_and_free_meter():
    header, body = body_lines(NORTHERN_LASSES)
    # Bars after [M:3/4] are judged against 3/4, until [M:C|] brings back the tune's meter.
    changed = "\n".join([*header, "[M:3/4] ABc|def|gag|fed|[M:C|]", *body])
    tune = checks.read_written(changed)
    assert [bar.meter for bar in tune.bars[:5]] == [Fraction(3, 4)] * 4 + [Fraction(1)]
    assert checks.bars_off(tune) == ([], 23)
    wrong = checks.read_written(changed.replace("|def|", "|defg|"))
    assert checks.bars_off(wrong)[0] == [1]
    free = checks.read_written(NORTHERN_LASSES.replace("M:C|", "M:none"))
    assert checks.bars_off(free) == ([], 0)


def test_unbalanced_repeats_fail():
    header, body = body_lines(NORTHERN_LASSES)
    # Open the second part with |: and drop the :| of its first ending: nothing closes it, and
    # the tune ends on a plain bar line.
    second = body[2].replace("(Bd)|", "(Bd)|:", 1)
    last = body[3].replace("gfef:|2", "gfef|2", 1).replace("G2||", "G2|")
    tune_text = "\n".join([*header, *body[:2], second, last])
    results, _ = checks.check_tune(tune_text)
    assert results["repeats"] == "a |: is never closed by a :|"
    # Two |: with no :| between them.
    results, _ = checks.check_tune(NORTHERN_LASSES.replace("gG ((3GGG)", "|:gG ((3GGG)"))
    assert results["repeats"] == "a |: is followed by another |: with no :| between them"
    # A second ending that is never reached: render.py says the repeat is unbalanced.
    results, _ = checks.check_tune(NORTHERN_LASSES.replace("gfef:|2", "gfef|2"))
    assert "never played" in results["repeats"]
    # The last section may end |] instead of :| (real tunes do).
    results, _ = checks.check_tune("\n".join([*header, "|:GABc dedB|cBAG FGAB|]"]))
    assert results["repeats"] is None


def test_garbled_text_fails_parse_and_render():
    results, tune = checks.check_tune("X:1\nT:x\nM:6/8\nK:G\nGAB c#d|\n")
    assert tune is None
    assert results["parses"].startswith("unsupported")
    assert results["renders"].startswith("unsupported")
    assert results["bars"] == results["repeats"] == "does not parse"


@pytest.mark.skipif(shutil.which("abc2midi") is None, reason="abc2midi not installed")
def test_abc2midi_check_reports_each_tunes_error():
    garbled = "X:1\nT:x\nM:6/8\nL:1/8\nK:G\nGAB c#d e3|\n"
    # Fare You Well ties notes of different pitches ("A-d3"), which abc2midi calls an error: one
    # reason its verdict stays out of the headline.
    texts = [NORTHERN_LASSES, garbled, TUNEBOOK[0].text, NORTHERN_LASSES]
    errors = checks.abc2midi_errors(texts, chunk=3)
    assert errors[0] is None and errors[3] is None
    assert "#" in errors[1]
    assert "tied" in errors[2]


def test_distances_by_hand():
    p, q = {"a": 0.5, "b": 0.5}, {"a": 1.0}
    assert stats.total_variation(p, q) == pytest.approx(0.5)
    assert stats.total_variation(p, p) == 0
    assert stats.jensen_shannon({"a": 1.0}, {"b": 1.0}) == pytest.approx(1.0)
    assert stats.jensen_shannon(p, p) == pytest.approx(0.0)
    assert stats.entropy({"a": 0.5, "b": 0.25, "c": 0.25}) == pytest.approx(1.5)


def test_copied_phrase_is_found_in_the_training_tunes():
    training = TUNEBOOK[:3]
    written = [checks.read_written(t.text) for t in training]
    index = novelty.NoveltyIndex([t.text for t in training], written)
    _, body = body_lines(NORTHERN_LASSES)
    header, fare_you_well = body_lines(training[0].text)
    # A line of Northern Lasses, then four bars of "Fare You Well" (tunebook X:2), then another
    # line of Northern Lasses, under Fare You Well's header (bars are compared as pitches and
    # lengths, which the key and unit length decide).
    copied = "\n".join([*header, body[0], fare_you_well[2], body[1]])
    shared = index.shared(copied, checks.read_written(copied))
    assert shared.nearest == 0
    assert shared.bars >= 4
    assert shared.chars >= len(fare_you_well[2])
    original = index.shared(NORTHERN_LASSES, checks.read_written(NORTHERN_LASSES))
    assert original.bars < 4 and original.chars < 20
    # A training tune shares all of itself.
    itself = index.shared(training[1].text, written[1])
    assert itself.chars == len(novelty.body(training[1].text))
    assert itself.bars == len(written[1].bars)
    summary = novelty.summarise([shared, original])
    assert summary["copying_share"] == 0.5


@pytest.mark.slow
def test_headline_checks_pass_99_percent_of_real_tunes():
    tunes, _ = load_corpus()
    failed = Counter()
    for tune in tunes:
        results, _ = checks.check_tune(tune.text)
        failed.update(name for name, reason in results.items() if reason is not None)
    rates = {name: 1 - failed[name] / len(tunes) for name in checks.HEADLINE_CHECKS}
    print(f"real-tune pass rates over {len(tunes)} tunes: {rates}")
    assert len(tunes) > 4000
    for name, rate in rates.items():
        assert rate >= 0.99, (name, rate)
