import json

import pytest

from musicgen.data.vocab import BOS, EOS, PAD, UNK, Vocabulary
from musicgen.errors import VocabularyError

TUNE = """X:1
T:The Kesh
M:6/8
L:1/8
K:G
|:GAG GAB|ABA ABd|edd gdd|edB dBA:|
"""


def test_round_trip_and_special_tokens():
    vocab = Vocabulary.from_texts([TUNE])
    ids = vocab.encode_tune(TUNE)
    assert ids[0] == BOS and ids[-1] == EOS
    assert min(ids[1:-1]) > UNK
    assert vocab.decode(ids) == TUNE
    assert len(vocab) == 4 + len(set(TUNE))


def test_unknown_characters_strict_and_lenient():
    vocab = Vocabulary.from_texts([TUNE])
    with pytest.raises(VocabularyError, match="'#'"):
        vocab.encode("G#A")
    assert vocab.encode("G#A", strict=False)[1] == UNK
    assert vocab.unknown_characters("G#A$#") == ["#", "$"]


def test_json_round_trip(tmp_path):
    vocab = Vocabulary.from_texts([TUNE, "é"])
    path = tmp_path / "vocab.json"
    vocab.save(path)
    loaded = Vocabulary.load(path)
    assert loaded.characters == vocab.characters
    assert json.loads(path.read_text())["special_tokens"][PAD] == "<pad>"


def test_bad_vocab_files(tmp_path):
    with pytest.raises(VocabularyError, match="missing"):
        Vocabulary.load(tmp_path / "vocab.json")
    (tmp_path / "bad.json").write_text('{"version": 99}')
    with pytest.raises(VocabularyError, match="version"):
        Vocabulary.load(tmp_path / "bad.json")
    (tmp_path / "junk.json").write_text("not json")
    with pytest.raises(VocabularyError, match="not a musicgen vocabulary"):
        Vocabulary.load(tmp_path / "junk.json")
