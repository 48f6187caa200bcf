"""Generation with a tiny real LSTM and a vocabulary built from real tunes (O'Neill's, music21)."""

import dataclasses

import numpy as np
import pytest

from musicgen.config import ModelConfig, SampleConfig
from musicgen.data.vocab import BOS, EOS, PAD, UNK, Vocabulary
from musicgen.errors import ConfigError, GenerationError
from musicgen.generation.generate import Generator, parse_seed
from musicgen.generation.sampling import Sampler
from musicgen.models import build_model
from musicgen.tfsetup import import_tensorflow

tf = import_tensorflow()

# From music21/corpus/oneills1850/0001-0050.abc, without the transcriber's Z: lines.
TUNES = [
    """X: 2
T: Fare You Well
M: 2/4
L: 1/16
B: "O'Neill's 2"
N: "Slow" "collected by F. O'Neill"
K:D
f-g | a3-b g3-a | f4 e3-d | d3-c A3-B | c4 d3-e |
d3-c (3(A2G2F2) | G4F2-G2 | A-d3 d3-e | d6 ||
A2 | d3-e f3-g | a4 a3-g | a3-b a3-f | g4 g3-g |
a3-b a3-g | {e}=f4 e3-c | d3-c A3-G | A6 f-g |
a3-b g3-a | f4 e3-d | d3-c A3-B | c4 d3-e |
d3-c (3(A2G2F2) | G4 F2-G2 | A-d3 d3-e | d6 ||
""",
    """X: 3
T: The Little Heathy Hill
M: C
L: 1/8
B: "O'Neill's 3"
N: "Moderate" "collected by F. O'Neill"
K:Gm
B/2-c/2 | d2 d>-c B2 A-B | (GBAG) F2 D-F | (G>AG).F (D>CD).F | G2 G>-A B3 c |
(d>ed).c B2 A>-B | (GBAG) F2 D-F | (G>AG).F (D>CD).F | G2 G>A G3 ||
D | GABc d2 d=e | f2 =ed c>AF>>c | d>edc B2 AB | GFD=E F2 B-c |
(d>ed).c B2 A2 | (GBAG) F2 D-F | (G>AG).F (D>CD).F | G2 G>A G3 ||
""",
    """X: 4
T: The Little Girl of my Heart
M: 4/4
L: 1/8
B: "O'Neill's 4"
N: "Slow" "collected by F. O'Neill"
K:D
F-G | A-dd>-c d2 cd | e-fgg (f2 d>e) | f-d (c/2A/2G) A2c-d | e2 {=fe}d2 d2 (^FG) |
A-dd>-c d2 cd | e-ag-e d2 de | f-d(c{dc}A) (GB{cB}A>).G | F2 D2 D2 ||
""",
]

SEED = "X:1\nM:2/4\nK:D\n"


@pytest.fixture(scope="module")
def vocab():
    return Vocabulary.from_texts(TUNES)


@pytest.fixture(scope="module")
def model(vocab):
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(3)
    config = ModelConfig(vocab_size=len(vocab), embedding_dim=8, units=16, layers=2, dropout=0.0)
    return build_model(config)


@pytest.fixture(scope="module")
def generator(model, vocab):
    return Generator(model, vocab)


def config(**changes):
    return dataclasses.replace(
        SampleConfig(num=3, temperature=1.0, max_length=120, random_seed=5), **changes
    )


def test_tunes_start_with_the_seed_and_use_only_vocabulary_characters(generator, vocab):
    seed = "X:1\nT:A\nM:2/4\nK:D\n"
    tunes = generator.generate(seed, config(num=4))
    assert len(tunes) == 4
    for tune in tunes:
        assert tune.startswith(seed)
        assert len(tune) <= 120
        assert vocab.unknown_characters(tune) == []
        assert "\ufffd" not in tune
    assert len(set(tunes)) > 1  # rows sample independently


@pytest.mark.parametrize("num", [1, 4])
def test_a_header_without_a_title_gets_one_written_by_the_model(generator, vocab, num):
    tunes = generator.generate(SEED, config(num=num, max_length=160))  # SEED has no T:
    assert len(tunes) == num
    for tune in tunes:
        lines = tune.split("\n")
        assert lines[0] == "X:1" and lines[1].startswith("T:") and len(lines[1]) > 2
        assert lines[1] == lines[1].rstrip()  # the padding that aligned the rows is gone
        assert lines[2:4] == ["M:2/4", "K:D"]  # the seed's fields, as given
        assert len(tune) <= 160 and not vocab.unknown_characters(tune)
    assert tunes == generator.generate(SEED, config(num=num, max_length=160))


def test_empty_seed(generator, vocab):
    tunes = generator.generate("", config(num=2, max_length=50))
    assert len(tunes) == 2
    assert all(len(tune) <= 50 and not vocab.unknown_characters(tune) for tune in tunes)


def test_same_seed_same_tunes_and_different_seed_different_tunes(generator):
    first = generator.generate(SEED, config())
    assert generator.generate(SEED, config()) == first
    assert generator.generate(SEED, config(random_seed=6)) != first


def test_more_tunes_keep_the_first_ones(generator):
    # Documented: row r depends on the seed and r only, so asking for more tunes adds tunes.
    assert generator.generate(SEED, config(num=5))[:2] == generator.generate(SEED, config(num=2))


def test_not_retraced_for_other_settings_or_number_of_tunes(model, vocab):
    generator = Generator(model, vocab)
    generator.generate(SEED, config())
    generator.generate(
        SEED, config(temperature=0.5, top_k=5, top_p=0.8, random_seed=1, max_length=60)
    )
    generator.generate("X:2\nK:G\n", config(num=7, max_length=200))
    assert generator.tracing_counts == {"prime": 1, "decode": 1}


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        (dict(num=0), "num"),
        (dict(temperature=0.0), "temperature"),
        (dict(temperature=-1.0), "temperature"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(top_k=-1), "top_k"),
        (dict(top_k=10_000), "top_k"),
        (dict(max_length=len(SEED)), "max_length"),
        (dict(random_seed=2**64), "random_seed"),
    ],
)
def test_bad_settings_raise_one_line_errors(generator, changes, words):
    # SampleConfig refuses what is wrong on its own; generate what depends on the vocabulary/seed.
    with pytest.raises((ConfigError, GenerationError), match=words) as error:
        generator.generate(SEED, config(**changes))
    assert "\n" not in str(error.value)


def test_unknown_seed_character_raises_generation_error(generator):
    with pytest.raises(GenerationError, match="vocabulary lacks") as error:
        generator.generate("X:1\nK:D\n€ab#", config())
    assert "'€'" in str(error.value) and "'#'" in str(error.value)


def test_loop_logits_equal_the_full_forward_pass(model, vocab):
    """Teacher-forced check of the state carry: each step's logits match one full forward pass."""
    prompt = [BOS, *vocab.encode(SEED)]
    steps, batch = 40, 2

    def next_fn(token_ids, state, index):
        model_state, seen = state  # seen: (steps, batch, vocab), the logits of every step so far
        logits, model_state = model.step(token_ids, model_state)
        return logits, (model_state, tf.tensor_scatter_nd_update(seen, [[index]], logits[None]))

    # EOS forbidden too, so every row runs all the steps.
    sampler = Sampler(next_fn, forbidden_ids=(PAD, BOS, EOS, UNK))
    _, start = model(tf.constant([prompt[:-1]] * batch), return_state=True)
    seen = tf.zeros([steps, batch, len(vocab)])
    result = sampler((start, seen), tf.fill([batch], prompt[-1]), steps, random_seed=1)
    tokens = result.tokens.numpy()
    assert tokens.shape == (batch, steps) and not np.isin(tokens, [PAD, BOS, EOS, UNK]).any()

    full = model(np.concatenate([[prompt] * batch, tokens], axis=1)).numpy()  # (batch, time, vocab)
    expected = full[:, len(prompt) - 1 : len(prompt) - 1 + steps]  # logits that chose each token
    from_loop = np.transpose(result.state[1].numpy(), (1, 0, 2))
    assert np.max(np.abs(from_loop - expected)) < 1e-4


def test_parse_seed_literal_and_empty():
    assert parse_seed(None) == ""
    assert parse_seed("") == ""
    assert parse_seed(r"X:1\nM:6/8\nK:D\n") == "X:1\nM:6/8\nK:D\n"
    assert parse_seed(r"a\tb") == r"a\tb"  # only \n is translated


def test_parse_seed_reads_the_first_tune_of_an_abc_file(tmp_path):
    path = tmp_path / "book.abc"
    path.write_text("% a tunebook\n\n" + "\n".join(TUNES), encoding="utf-8")
    seed = parse_seed(str(path))
    assert seed.startswith("X:2\nT:Fare You Well\n")
    assert "K:D\nf-g | a3-b" in seed
    # The header and the opening line only: the model writes the rest.
    assert seed.endswith("K:D\nf-g | a3-b g3-a | f4 e3-d | d3-c A3-B | c4 d3-e |\n")


def test_parse_seed_missing_or_empty_abc_file(tmp_path):
    with pytest.raises(GenerationError, match="does not exist"):
        parse_seed(str(tmp_path / "missing.abc"))
    empty = tmp_path / "empty.abc"
    empty.write_text("no tunes here\n", encoding="utf-8")
    with pytest.raises(GenerationError, match="no usable tune"):
        parse_seed(str(empty))
