"""Tests for musicgen.music.abc: splitting tunebooks, normalising tunes, reading files in any
encoding."""

from __future__ import annotations

import codecs
from pathlib import Path

import mido
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from musicgen.errors import ParseError
from musicgen.music.abc import (
    Tune,
    header_fields,
    parse_tune,
    read_text_file,
    split_tunebook,
    undo_mail_encoding,
)

TUNEBOOK = Path(__file__).parent / "data" / "abc" / "tunebook.abc"

# miscFolk/americanfifeopus.abc X:15 as it must come out: C: and Z: gone, `% Fife I` comments and
# the lone `%` line gone, header ordered X, T, others, K.
NORMAN_TOY = """\
X:15
T:Norman Toy
M:2/4
L:1/8
V:1
V:2
K:D
V:1
dA dA | df f2|Bg Af|Ge Ec|dA dA|df f2|Ac eg|fd d2:|
V:2
dA dA | FA Ad|GB Fd|Bc GE|dA dA|FA Ad|eg ge|dF F2:|
V:1
FA d=c|=cB B2|A^c eg|fd d2|Ad fg|fd AF|Ge Ec|d2 D2:|
V:2
DF DF | FG G2|AA ce|dF F2|AF AB|AF FD|G2 G2|F2 F2:|
"""

# The first two lines of O'Neill's "The Kesh"-style jig body, used to build small tunes.
BODY = "|:GAG GAB|ABA ABd|edd gdd|edB dBA:|\n"


@pytest.fixture(scope="module")
def fixture_text() -> str:
    return TUNEBOOK.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def split(fixture_text) -> tuple[list[Tune], list[ParseError]]:
    return split_tunebook(fixture_text, "book.abc")


def test_split_keeps_good_tunes_in_order_with_provenance(split):
    tunes, _ = split
    assert [t.source for t in tunes] == [
        "book.abc#X:2",
        "book.abc#X:3",
        "book.abc#X:15",
        "book.abc#X:0041",
        "book.abc#X:92",  # duplicates are load_corpus's business
    ]
    assert [t.title for t in tunes[:4]] == [
        "Fare You Well",
        "HEY, CA' THRO' -- JIG",
        "Norman Toy",
        "My Wifes a Wanton wee thing.",
    ]
    assert [(t.key, t.meter) for t in tunes[:4]] == [
        ("D", "2/4"),
        ("D", "9/8"),
        ("D", "2/4"),
        ("D", "6/8"),
    ]


def test_split_reports_each_bad_tune_with_reason_and_number(split):
    _, errors = split
    assert [(e.reason, str(e).split(":")[0] + ":" + str(e).split(":")[1]) for e in errors] == [
        ("no-key", "book.abc#X:90"),
        ("no-notes", "book.abc#X:91"),
    ]
    assert all("\n" not in str(e) for e in errors)


def test_real_tune_normalises_exactly(split):
    assert split[0][2].text == NORMAN_TOY


def test_metadata_and_free_text_are_dropped(split):
    for tune in split[0]:
        lines = tune.text.splitlines()
        assert "@" not in tune.text and "%" not in tune.text
        assert "Free text" not in tune.text and "3/8=120" not in tune.text
        assert not [line for line in lines if line[:2] in {"Z:", "N:", "B:", "C:", "I:"}]


def test_header_is_x_first_titles_next_key_last(split):
    for tune in split[0]:
        lines = tune.text.splitlines()
        key_line = next(i for i, line in enumerate(lines) if line.startswith("K:"))
        assert lines[0] == "X:" + tune.source.split("#X:")[1]
        titles = [i for i, line in enumerate(lines[:key_line]) if line.startswith("T:")]
        assert titles == list(range(1, 1 + len(titles)))
        assert all(line[1] == ":" for line in lines[:key_line])
        assert tune.text.endswith("\n") and not tune.text.endswith("\n\n")
        assert "" not in lines


@pytest.mark.parametrize(
    "encoding, newline",
    [("latin-1", "\r\n"), ("utf-8-sig", "\r"), ("cp1252", "\n"), ("utf-16", "\r\n")],
)
def test_any_encoding_and_line_ending_gives_the_same_tunes(
    tmp_path, fixture_text, split, encoding, newline
):
    path = tmp_path / "book.abc"
    path.write_bytes(fixture_text.replace("\n", newline).encode(encoding))
    tunes, errors = split_tunebook(read_text_file(path), "book.abc")
    assert tunes == split[0]
    assert "T:Slán Go Fóill" in tunes[0].text
    assert [e.reason for e in errors] == ["no-key", "no-notes"]


def test_utf8_bom_is_not_part_of_the_text(tmp_path):
    path = tmp_path / "bom.abc"
    path.write_bytes(codecs.BOM_UTF8 + b"X:1\nT:Caf\xc3\xa9\nK:G\n" + BODY.encode())
    assert read_text_file(path).startswith("X:1\nT:Café\n")


def test_binary_file_is_a_parse_error(tmp_path):
    path = tmp_path / "song.abc"
    midi = mido.MidiFile()
    midi.tracks.append(mido.MidiTrack([mido.Message("note_on", note=62, velocity=64, time=0)]))
    midi.save(path)
    with pytest.raises(ParseError, match="song.abc") as caught:
        read_text_file(path)
    assert caught.value.reason == "binary"


def test_missing_file_is_unreadable(tmp_path):
    with pytest.raises(ParseError) as caught:
        read_text_file(tmp_path / "gone.abc")
    assert caught.value.reason == "unreadable"


def test_text_without_x_line_has_no_tunes():
    tunes, errors = split_tunebook("% just a comment\nT:Stray\nK:G\n" + BODY, "notes.abc")
    assert tunes == [] and [e.reason for e in errors] == ["no-tunes"]


def test_file_header_fields_apply_to_tunes_that_lack_them():
    file_header = "% tunebook\n\nM:6/8\nL:1/8\nZ:editor@example.com\n\nT:free text\nL:1/4\n"
    text = f"{file_header}\nX:1\nT:A\nK:G\n{BODY}\nX:2\nM:9/8\nK:D\n{BODY}"
    tunes, _ = split_tunebook(text, "book.abc")
    assert tunes[0].text == f"X:1\nT:A\nM:6/8\nL:1/8\nK:G\n{BODY}"
    assert tunes[1].text == f"X:2\nM:9/8\nL:1/8\nK:D\n{BODY}"


def test_header_continuation_joins_kept_fields_and_follows_dropped_ones():
    raw = "X:7\nT:The Humours of\n+:Ballyloughlin\nN:a long note\n+:about the source\nK:D\n" + BODY
    tune = parse_tune(raw, "t")
    assert tune.title == "The Humours of Ballyloughlin"
    assert tune.text == f"X:7\nT:The Humours of Ballyloughlin\nK:D\n{BODY}"


def test_body_keeps_musical_fields_and_drops_the_rest():
    raw = (
        "X:1\nT:Tune\nM:6/8\nK:G\n"
        "|:GAG GAB|[M:9/8]ABA ABd ABd|[r:a remark]edd gdd|\n"
        "w:some lyr-ics here\n+:more lyrics\n"
        "N:second ending differs\n"
        "P:B\n"
        "K:D % modulates\n"
        "T:Second part\n"
        "dfa afd|[K:Ador]edB dBA:|\n"
        "W:Words after the tune\n"
    )
    body = parse_tune(raw, "t").text.split("K:G\n")[1]
    assert body == ("|:GAG GAB|[M:9/8]ABA ABd ABd|edd gdd|\nP:B\nK:D\ndfa afd|[K:Ador]edB dBA:|\n")


def test_whitespace_comments_and_escapes():
    raw = (
        "X: 3  \r\nT:\tCaf\\'e 100\\% % not the title\r\nK: G \r\n"
        "\tGAG GAB|\\\r\n  ABA ABd| % bar 2\r\n"
    )
    tune = parse_tune(raw, "t")
    assert tune.text == "X:3\nT:Caf\\'e 100\\%\nK:G\nGAG GAB|\\\nABA ABd|\n"
    assert (tune.title, tune.key) == ("Caf\\'e 100\\%", "G")


def test_a_blank_line_ends_the_tune():
    raw = f"X:1\nK:G\n{BODY}\nThis tune was collected in 1903.\n"
    assert parse_tune(raw, "t").text == f"X:1\nK:G\n{BODY}"


@pytest.mark.parametrize("first_lines", ["", "X:\n", "\n\nX: \n"])
def test_missing_title_and_x_number_are_fine(first_lines):
    tune = parse_tune(f"{first_lines}K:Edor\n{BODY}", "t")
    assert (tune.title, tune.key, tune.meter) == ("", "Edor", "")
    assert tune.text == f"X:1\nK:Edor\n{BODY}"


@pytest.mark.parametrize(
    "raw, reason",
    [
        (f"X:1\nT:No Key\nM:6/8\n{BODY}", "no-key"),
        (f"X:1\nT:Empty Key\nK:\n{BODY}", "no-key"),
        (f"X:1\nT:No Key Before Blank\n\nK:G\n{BODY}", "no-key"),
        ('X:1\nT:Rests\nK:G\n"^Fade" z6 | !fermata!x6 | [K:D] [r:Bee] |]\n', "no-notes"),
        ("X:1\nT:Nothing\nK:G\n", "no-notes"),
    ],
)
def test_unusable_tunes_raise_with_reason(raw, reason):
    with pytest.raises(ParseError, match=r"^src: ") as caught:
        parse_tune(raw, "src")
    assert caught.value.reason == reason


def test_header_fields_first_value_per_letter(split, fixture_text):
    assert header_fields(split[0][0].text) == {
        "X": "2",
        "T": "Fare You Well",
        "M": "2/4",
        "L": "1/16",
        "K": "D",
    }
    raw_fields = header_fields(fixture_text.split("\n\n")[1])
    assert raw_fields["Z"].startswith('"Transcribed by') and raw_fields["K"] == "D"


ABC_ALPHABET = 'XTKMLNZrwV:+|%\\[]"!ABCDEFGabcdefgz0123/ -\n\r\t\x00é'


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=ABC_ALPHABET, max_size=200))
def test_normalisation_is_idempotent_and_well_formed(raw):
    try:
        tune = parse_tune(raw, "t")
    except ParseError as error:
        assert error.reason in {"no-key", "no-notes"}
        return
    assert parse_tune(tune.text, "t") == tune
    lines = tune.text.split("\n")
    assert lines[0].startswith("X:") and lines[-1] == "" and "" not in lines[:-1]
    assert "\r" not in tune.text and "\t" not in tune.text
    assert "%" not in tune.text.replace("\\%", "")
    assert all(line == line.rstrip() for line in lines)


def test_layout_padding_is_removed_from_music_lines():
    raw = 'X:7\nT:Padded\nK:G\n  G2   A2``B2 |  "D7"  c4 |]\n'
    tune = parse_tune(raw, "pad.abc")
    assert tune.text.splitlines()[-1] == 'G2 A2B2 | "D7" c4 |]'


def test_mail_encoded_tunebook_is_repaired():
    # Ryan's Mammoth has files that went through quoted-printable e-mail encoding.
    from musicgen.data.corpus import default_corpus_files
    from musicgen.music.render import abc_to_performance

    path = next(
        p for label, p in default_corpus_files() if label.endswith("BellsOfLewistonReel.abc")
    )
    raw = path.read_text(encoding="latin-1")
    assert "=20" in raw
    tunes, errors = split_tunebook(read_text_file(path), path.name)
    assert not errors and len(tunes) == 1
    assert "=20" not in tunes[0].text
    assert not any(line.endswith("=") for line in tunes[0].text.splitlines())
    assert len(abc_to_performance(tunes[0].text).notes) > 50


def test_natural_signs_are_not_mistaken_for_mail_encoding():
    text = "X:1\nK:G\n=F2 =c2 ^f=f|\n"
    assert undo_mail_encoding(text) == text
    assert undo_mail_encoding("ab =\ncd =20|") == "ab cd  |"
