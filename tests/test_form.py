"""The form of a tune (`musicgen.evaluation.form`): endings and sections of hand-made tunes whose
answers are known, and the figures of the bundled corpus's real tunes."""

from __future__ import annotations

import pytest

from musicgen.data.corpus import load_corpus
from musicgen.evaluation import form

# Two eight-bar parts of a reel, each repeated; the last note is the written `G2`.
REEL = """X:1
T:Two parts
M:4/4
L:1/8
K:{key}
|:GABc dedB|dedB dedB|c2ec B2dB|c2A2 A2BA|GABc dedB|dedB dedB|c2ec B2dB|A2F2 G4:|
|:g2gf gdBd|g2f2 e2d2|c2ec B2dB|c2A2 A2B2|g2gf gdBd|g2f2 e2d2|c2ec B2dB|A2F2 {end}:|
"""


def reel(key: str = "G", end: str = "G4") -> str:
    return REEL.format(key=key, end=end)


def tune(body: str, key: str = "G", meter: str = "4/4") -> str:
    return f"X:1\nT:t\nM:{meter}\nL:1/8\nK:{key}\n{body}\n"


def test_a_tune_ending_on_its_tonic_and_one_that_does_not():
    home = form.read_form(reel())
    assert home.ends_on_tonic is True
    assert home.final_degree == "1"
    assert home.tonic == 7 and home.final_pitch == 67
    away = form.read_form(reel(end="D4"))  # D is the fifth of G
    assert away.ends_on_tonic is False
    assert away.final_degree == "5"
    assert form.read_form(reel(end="c4")).final_degree == "4"


@pytest.mark.parametrize(
    ("key", "end", "degree"),
    [
        ("Ador", "A4", "1"),  # the tonic of a mode is its root, not the signature's major key
        ("Ador", "c4", "3"),
        ("A Dorian", "G4", "7"),
        ("Emin", "E4", "1"),
        ("Em", "G4", "3"),
        ("Dmix", "D4", "1"),
        ("Dmix", "c4", "7"),  # C natural is in D mixolydian
        ("D", "=c4", "chromatic"),
        ("Bb", "B4", "1"),  # B is flat in Bb
        ("F#m", "F4", "1"),  # and sharp in F# minor
    ],
)
def test_modes_and_their_tonic(key, end, degree):
    tune_form = form.read_form(reel(key, end))
    assert tune_form.final_degree == degree
    assert tune_form.ends_on_tonic is (degree == "1")


def test_keys_without_a_tonic_are_counted_apart():
    for key in ("none", "HP"):
        tune_form = form.read_form(reel(key))
        assert tune_form.tonic is None and tune_form.ends_on_tonic is None
        assert tune_form.final_degree == form.NO_TONIC
    figures = form.figures([form.read_form(reel("none")), form.read_form(reel(end="D4"))])
    assert figures["tonic_ending_share"] == 0.0  # of the one tune with a tonic


def test_two_repeated_sections_of_eight_bars():
    tune_form = form.read_form(reel())
    assert tune_form.sections == (form.Section(8, True), form.Section(8, True))
    assert tune_form.length_bars == 16


def test_a_pickup_and_the_short_bar_that_completes_it_are_one_bar():
    body = (
        "D|:GABc dedB|dedB dedB|c2ec B2dB|c2A2 A2BA|GABc dedB|dedB dedB|c2ec B2dB|A2F2 G3:|\n"
        "d|g2gf gdBd|g2f2 e2d2|c2ec B2dB|c2A2 A2B2|g2gf gdBd|g2f2 e2d2|c2ec B2dB|A2F2 G3|]"
    )
    tune_form = form.read_form(tune(body))
    # The pickup before `|:` joins the first part; the second part's pickup `d|` sits after `:|`.
    assert tune_form.sections == (form.Section(8, True), form.Section(8, False))
    assert tune_form.final_pitch == 67


def test_first_and_second_endings_belong_to_their_section():
    body = (
        "|:GABc dedB|dedB dedB|c2ec B2dB|c2A2 A2BA|GABc dedB|dedB dedB|c2ec B2dB|"
        "1 A2F2 G2BA:|2 A2F2 G4||\n"
        "g2gf gdBd|g2f2 e2d2|c2ec B2dB|c2A2 A2B2|g2gf gdBd|g2f2 e2d2|c2ec B2dB|A2F2 D4|]"
    )
    tune_form = form.read_form(tune(body))
    assert tune_form.sections == (form.Section(8, True), form.Section(8, False))
    assert tune_form.length_bars == 16
    assert tune_form.final_degree == "5"


def test_the_final_note_is_the_last_played():
    # The written last note D is in the first ending; G, in the second, is played last.
    body = "|:GABc dedB|[1 c2A2 D4:|[2 c2A2 G4|]"
    assert form.read_form(tune(body)).final_degree == "1"
    # Of a final double stop, the highest note (the melody).
    assert form.read_form(tune("GABc dedB|[G,2d2] [D4B4]|]")).final_degree == "3"


def test_an_inline_key_change_sets_the_final_tonic():
    body = "GABc dedB|dedB G4|][K:Em] e2B2 G2E2|B2A2 E4|]"
    tune_form = form.read_form(tune(body))
    assert tune_form.key == "Em" and tune_form.final_degree == "1"
    assert len(tune_form.sections) == 2


def test_section_lines_split_and_a_lone_note_is_no_section():
    body = "GABc dedB|dedB dedB||c2ec B2dB|c2A2 A2BA::GABc dedB|G8:|B|]"
    tune_form = form.read_form(tune(body))
    assert [s.bars for s in tune_form.sections] == [2, 2, 2]  # the last `B` joins the last part
    assert [s.repeated for s in tune_form.sections] == [False, True, True]
    assert len(form.read_form(tune("GABc dedB|dedB dedB|G8")).sections) == 1


def test_free_meter_counts_bar_lines():
    tune_form = form.read_form(tune("GABc dedB c|dedB|G4||A2B2|G4|]", meter="none"))
    assert [s.bars for s in tune_form.sections] == [3, 2]


def test_compare_puts_generated_beside_real_with_distances():
    real = [form.read_form(reel()), form.read_form(reel(end="D4"))]
    same = form.compare(real, real)
    assert same["figures"]["tonic_ending_share"] == {
        "generated": 0.5,
        "corpus": 0.5,
        "difference": 0.0,
    }
    assert same["figures"]["mean_length_bars"]["relative_difference"] == 0.0
    for compared in same["distributions"].values():
        assert compared["total_variation"] == 0.0
    one_part = [form.read_form(tune("|:GABc dedB|dedB dedB|c2ec B2dB|c2A2 G4:|"))]
    apart = form.compare(one_part, real)
    assert apart["figures"]["tonic_ending_share"]["difference"] == pytest.approx(0.5)
    assert apart["distributions"]["sections_per_tune"]["total_variation"] == 1.0
    assert apart["distributions"]["bars_per_section"]["generated"] == {"4": 1.0}
    assert apart["figures"]["mean_length_bars"]["relative_difference"] == pytest.approx(-0.75)
    assert form.compare_texts(["not a tune"], [reel()])["figures"]["tunes"]["generated"] == 0


@pytest.mark.slow
def test_the_bundled_corpus_figures():
    tunes, _ = load_corpus()
    forms = form.read_forms(tune.text for tune in tunes)
    figures = form.figures(forms)
    print(f"form of the bundled corpus's real tunes: {figures}")
    assert len(forms) >= 0.99 * len(tunes)
    # README, `musicgen evaluate`: 82.1% end on the tonic, 85.0% have two sections.
    assert 0.78 < figures["tonic_ending_share"] < 0.86
    assert 0.80 < figures["two_section_share"] < 0.90
    assert 7.5 < figures["mean_bars_per_section"] < 8.5
    assert figures["median_length_bars"] == 16
    degrees = form.distributions(forms)["final_degree"]
    assert max(degrees, key=degrees.get) == "1"
    assert degrees["5"] < 0.06 and degrees["4"] < 0.06
