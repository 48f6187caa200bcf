"""Every tune at root C for training, generated tunes moved home (`musicgen.music.keyroot`, issue
13).

Pitches are read back by our renderer and by abc2midi (through mido); keys by music21.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from collections import Counter

import mido
import pytest

from musicgen.data.corpus import load_corpus
from musicgen.errors import RenderError
from musicgen.music import render
from musicgen.music.abc_reader import parse_key, split_tune
from musicgen.music.keyroot import (
    NO_ROOT,
    Homes,
    common_root_texts,
    home_bits,
    move_home,
    root_shift,
    seed_to_common_root,
    to_common_root,
)

JIG_IN_D = """X:1
T:Test jig
M:6/8
L:1/8
K:D
A|dfa agf|e2d cBA|dfa agf|e3 d2:|
"""
REEL_IN_ADOR = """X:2
T:Test reel
M:4/4
L:1/8
K:Ador
EAAG A2Bd|eA^cA eAce|g2ag egdB|1 cAGB A2:|2 cAGB A4|]
"""


def pitches(text: str) -> list[int]:
    return [note.pitch for note in render.abc_to_performance(text).notes]


def header_key(text: str):
    return split_tune(text)[0].key


@pytest.mark.parametrize(
    "root, shift",
    [("C", 0), ("D", -2), ("E", -4), ("F", -5), ("F#", -6), ("G", 5), ("A", 3), ("Bb", 2),
     ("B", 1), ("Eb", -3), ("C#", -1)],
)  # fmt: skip
def test_each_root_moves_to_c_by_at_most_a_tritone(root, shift):
    assert root_shift(root) == shift


def test_a_d_major_tune_moves_to_c_with_every_pitch_two_semitones_down():
    moved, root = to_common_root(JIG_IN_D)
    assert root == ("D", "")
    assert header_key(moved).name == "C"
    assert pitches(moved) == [p - 2 for p in pitches(JIG_IN_D)]


def test_a_dorian_tune_keeps_its_mode_and_its_accidentals_sound_right():
    moved, root = to_common_root(REEL_IN_ADOR)
    assert root == ("A", " Dorian")
    assert header_key(moved).name == "C Dorian"
    assert "K:Cdor" in moved
    assert pitches(moved) == [p + 3 for p in pitches(REEL_IN_ADOR)]


def test_a_key_without_a_root_is_refused():
    with pytest.raises(RenderError) as caught:
        to_common_root(JIG_IN_D.replace("K:D", "K:none"))
    assert caught.value.reason == NO_ROOT
    with pytest.raises(RenderError) as caught:
        to_common_root(JIG_IN_D.replace("K:D", "K:HP"))
    assert caught.value.reason == NO_ROOT


def test_moving_home_returns_the_tune_to_its_own_pitches():
    moved, _ = to_common_root(REEL_IN_ADOR)
    back = move_home([moved], Homes(), "A", random_seed=0)[0]
    assert header_key(back).name == "A Dorian"
    assert pitches(back) == pitches(REEL_IN_ADOR)


def test_without_a_root_each_tune_goes_to_a_home_key_of_its_mode():
    homes = Homes()
    for root, mode, count in (("D", "", 30), ("G", "", 10), ("E", "m", 5)):
        for _ in range(count):
            homes.add((root, mode))
    major, _ = to_common_root(JIG_IN_D)
    minor = major.replace("K:C", "K:Cm")
    moved = move_home([major] * 200 + [minor] * 20, homes, None, random_seed=7)
    major_keys = Counter(header_key(text).name for text in moved[:200])
    assert set(major_keys) == {"D", "G"}
    assert 0.6 < major_keys["D"] / 200 < 0.9  # drawn 3:1 as the corpus has them
    assert {header_key(text).name for text in moved[200:]} == {"Em"}
    # The same sampling seed draws the same keys.
    assert move_home([major] * 200, homes, None, random_seed=7) == moved[:200]
    for text in moved[:200]:
        shift = pitches(text)[0] - pitches(major)[0]
        assert pitches(text) == [p + shift for p in pitches(major)]


def test_a_tune_the_model_wrote_badly_is_kept_as_written():
    broken = "X:1\nT:broken\nK:Q\nabc|\n"
    assert move_home([broken], Homes(), "D", random_seed=0) == [broken]


def test_a_seed_is_moved_to_root_c_and_names_where_the_tunes_go_home():
    seed = "X:1\nM:6/8\nL:1/8\nK:G\nGAB d2e|"
    moved, root = seed_to_common_root(seed)
    assert root == "G"
    assert moved.splitlines()[3] == "K:C"
    assert seed_to_common_root("X:1\nT:no key yet\n") == ("X:1\nT:no key yet\n", None)


def test_homes_round_trip_through_json():
    homes = Homes()
    homes.add(("D", ""))
    homes.add(("A", " Dorian"))
    assert Homes.from_json(homes.to_json()).to_json() == homes.to_json()
    assert homes.key_counts() == {"A Dorian": 1, "D": 1}
    assert homes.choose(" Phrygian", random.Random(0)) in ("D", "A")  # an unseen mode: any root


# ------------------------------------------------------------------------------------------------
# The bundled corpus


@pytest.fixture(scope="module")
def corpus_texts() -> list[str]:
    tunes, _ = load_corpus()
    return [tune.text for tune in tunes]


@pytest.mark.slow
def test_every_bundled_tune_that_renders_moves_to_c_and_back_exactly(corpus_texts):
    moved_count = 0
    for text in corpus_texts:
        try:
            original = pitches(text)
            moved, (root, mode) = to_common_root(text)
        except RenderError:
            continue
        moved_count += 1
        key = header_key(moved)
        assert key.name == "C" + mode, text
        shift = root_shift(root)
        assert pitches(moved) == [p + shift for p in original], text
    assert moved_count > 4300


def test_the_corpus_moved_to_c_counts_what_it_skipped(corpus_texts):
    moved, skipped = common_root_texts(corpus_texts)
    assert len(moved) + sum(skipped.values()) == len(corpus_texts)
    assert len(moved) > 0.99 * len(corpus_texts)
    tonics = Counter(parse_key(header_key(text).name).name[:1] for text in moved[:500])
    assert tonics == Counter({"C": 500})


@pytest.mark.skipif(shutil.which("abc2midi") is None, reason="needs abc2midi")
def test_abc2midi_hears_the_moved_tune_two_semitones_down(tmp_path):
    moved, _ = to_common_root(JIG_IN_D)
    notes = {}
    for name, text in (("before", JIG_IN_D), ("after", moved)):
        (tmp_path / f"{name}.abc").write_text(text, encoding="utf-8")
        subprocess.run(
            ["abc2midi", f"{name}.abc", "-o", f"{name}.mid"], cwd=tmp_path, capture_output=True,
            check=True, timeout=60,
        )  # fmt: skip
        midi = mido.MidiFile(tmp_path / f"{name}.mid")
        notes[name] = [
            m.note for track in midi.tracks for m in track if m.type == "note_on" and m.velocity
        ]
    assert notes["before"] and notes["after"] == [p - 2 for p in notes["before"]]


# ------------------------------------------------------------------------------------------------
# Training at root C and generating at home, on the command line


@pytest.mark.slow
def test_a_common_root_run_trains_at_c_and_writes_its_tunes_in_the_keys_asked(tmp_path):
    import music21
    from cli_checks import invoke, one_line_error

    from musicgen.config import RunConfig
    from musicgen.data.corpus import music21_corpus_folder

    book = music21_corpus_folder() / "oneills1850/0001-0050.abc"
    run = tmp_path / "run"
    result = invoke(
        "train", "--data", book, "--run-dir", run, "--common-root", "--steps", 200,
        "--batch-size", 32, "--seq-length", 64, "--units", 64, "--embedding-dim", 16,
        "--layers", 1, "--learning-rate", 0.02, "--eval-every", 30, "--valid-sample", 0,
        "--no-cache",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert RunConfig.load(run / "config.json").data.common_root
    record = __import__("json").loads((run / "corpus.json").read_text())
    originals = Counter(header_key(t.text).name for t in load_corpus([book])[0])
    assert sum(Counter(record["headers"]["keys"]).values()) == record["train_tunes"]
    assert set(record["headers"]["keys"]) <= set(originals)  # the keys as the corpus had them
    assert sum(sum(c.values()) for c in record["homes"].values()) == record["train_tunes"]

    out = tmp_path / "g"
    result = invoke("generate", "--run-dir", run, "--key", "G", "--num", 8, "--max-length", 160,
                    "--temperature", 0.6, "--out", out, "--no-audio", "--no-score",
                    "--random-seed", 1)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    read = 0
    for path in sorted(out.glob("*.abc")):
        text = path.read_text()
        try:
            render.abc_to_performance(text)
        except RenderError:  # a tune the reader refuses cannot be moved: what the model wrote
            assert "K:G" in text, text  # after the header --key asked for (`generate_at_home`)
            continue
        assert "K:G" in text, text
        try:
            score = music21.converter.parse(text, format="abc")
        except Exception:  # noqa: BLE001  (a tiny model's tune music21 cannot read)
            continue
        signatures = list(score.recurse().getElementsByClass("KeySignature"))
        if signatures:
            read += 1
            assert signatures[0].sharps == 1, text
    assert read >= 1
    # evaluate judges the model at root C, and gives the bits/char of the tunes as written too.
    result = invoke("evaluate", "--run-dir", run, "--num", 4, "--max-length", 160,
                    "--out", tmp_path / "e")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    likelihood = __import__("json").loads((tmp_path / "e" / "evaluation.json").read_text())[
        "likelihood"
    ]
    assert abs(likelihood["as_written_bits_per_char"] - likelihood["bits_per_char"]) < 0.2
    assert "in their own keys" in result.stdout
    # A mode the corpus never used is refused as for any run.
    one_line_error(invoke("generate", "--run-dir", run, "--key", "Bphr", "--out", tmp_path / "x",
                          "--no-audio"), "--key Bphr")  # fmt: skip
    # A fine-tuned model reads tunes as its parent does: --own-keys contradicts it, and a run
    # fine-tuned without the flag inherits the common root.
    child = tmp_path / "ft"
    one_line_error(invoke("train", "--data", book, "--init", run, "--own-keys", "--run-dir", child),
                   "--own-keys contradicts --init")  # fmt: skip
    assert not child.exists()


def test_home_bits_are_what_drawing_the_root_costs():
    import math

    homes = Homes()
    for _ in range(7):
        homes.add(("D", ""))
    homes.add(("G", ""))
    bits, characters = home_bits([JIG_IN_D, JIG_IN_D.replace("K:D", "K:G")], homes)
    # add-one over the 12 roots: D (7 + 1) / 20, G (1 + 1) / 20
    assert bits == pytest.approx(-math.log2(8 / 20) - math.log2(2 / 20))
    assert characters == 2 * (len(JIG_IN_D) + 1)
    # Bb minor never seen in minor: all modes' roots are used, Bb unseen there too
    bits, _ = home_bits([JIG_IN_D.replace("K:D", "K:Bbm")], homes)
    assert bits == pytest.approx(-math.log2(1 / 20))
