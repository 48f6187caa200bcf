"""Seed text -> ids -> model + sampler -> new ABC tunes.

The model reads BOS + the seed once, in one batched call that returns its state; the tunes are then
sampled together as one batch inside the sampler's compiled loop, one `model.step` per character.
"""

from __future__ import annotations

from pathlib import Path

from musicgen.abc import read_text_file, split_tunebook
from musicgen.config import SampleConfig
from musicgen.errors import GenerationError
from musicgen.sampling import Sampler
from musicgen.tfsetup import import_tensorflow
from musicgen.vocab import BOS, Vocabulary

tf = import_tensorflow()


def parse_seed(seed: str | None) -> str:
    """Turns the user's `--seed` into seed text.

    Args:
        seed: None or "" for no seed; the path of an existing file (read as ABC, whatever its
            name) for the header and first line of music of its first tune; otherwise ABC text in
            which the two characters backslash and n stand for a newline.

    Returns:
        The seed text.

    Raises:
        GenerationError: the file holds no usable tune, is a folder or a special file, or `seed`
            names a file (it ends in `.abc`, `.txt`, `.mid`...) that does not exist.
        ParseError: the file cannot be read as text.
    """
    if not seed:
        return ""
    if "\\n" not in seed and "\n" not in seed:
        path = _existing_path(seed)
        if path is not None:
            return _first_tune(path)
        if seed.lower().endswith(_FILE_SUFFIXES):
            raise GenerationError(
                f"seed file {seed} does not exist; pass an existing .abc file or ABC text to --seed"
            )
    return seed.replace("\\n", "\n")


_FILE_SUFFIXES = (".abc", ".txt", ".mid", ".midi")


def _existing_path(seed: str) -> Path | None:
    """`seed` as a Path when something exists there, else None (ABC text rarely names a file)."""
    try:
        path = Path(seed)
        return path if path.exists() else None
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        return None


def _first_tune(path: Path) -> str:
    if path.is_dir():
        raise GenerationError(f"{path}: is a folder; pass an .abc file or ABC text to --seed")
    if not path.is_file():
        raise GenerationError(
            f"{path}: not a regular file; pass an .abc file or ABC text to --seed"
        )
    tunes, errors = split_tunebook(read_text_file(path), str(path))
    if not tunes:
        reason = f": {errors[0]}" if errors else ""
        raise GenerationError(f"seed file {path} holds no usable tune{reason}")
    return _header_and_first_line(tunes[0].text)


def _header_and_first_line(text: str) -> str:
    """The header up to K: and the first line of music: enough to set key, meter and opening
    phrase, while leaving the model the rest of the tune to write."""
    lines = text.splitlines(keepends=True)
    for index, line in enumerate(lines):
        if line.startswith("K:"):
            return "".join(lines[: index + 2])
    return text


class Generator:
    """Writes tunes with a trained model.

    Args:
        model: a model with `__call__(ids, state=None, return_state=True)`,
            `initial_state(batch)` and `step(token_ids, state) -> (logits, state)` (see
            `musicgen.models`).
        vocab: the vocabulary the model was trained with.

    The priming pass and the decode loop are each compiled once, on first use, and reused by every
    later `generate` call whatever its settings or number of tunes.
    """

    def __init__(self, model, vocab: Vocabulary):
        self.model = model
        self.vocab = vocab
        if not model.built:
            model(tf.constant([[BOS]], tf.int32))  # creates the weights outside any tf.function
        self.sampler = Sampler(lambda token_ids, state, index: model.step(token_ids, state))
        self._prime = tf.function(
            self._prime_state, input_signature=[tf.TensorSpec([None, None], tf.int32)]
        )

    @property
    def tracing_counts(self) -> dict[str, int]:
        """How many times the priming pass and the decode loop have been traced."""
        return {
            "prime": self._prime.experimental_get_tracing_count(),
            "decode": self.sampler.tracing_count,
        }

    def generate(self, seed_text: str, config: SampleConfig) -> list[str]:
        """Samples `config.num` tunes that continue `seed_text`.

        Args:
            seed_text: the start of every tune (may be empty).
            config: number of tunes, temperature, top-k, top-p, total length in characters including
                the seed, and the random seed. The same seed, model and config give the same tunes.

        Returns:
            `config.num` texts, each `seed_text` followed by the sampled characters up to, not
            including, the end-of-tune token; at most `config.max_length` characters.

        Raises:
            GenerationError: a setting is out of range or the seed has characters the model's
                vocabulary lacks.
        """
        self._check(seed_text, config)
        prompt = [BOS, *self.vocab.encode(seed_text)]
        state = self._state_after(prompt[:-1], config.num)
        result = self.sampler(
            state,
            tf.fill([config.num], prompt[-1]),
            config.max_length - len(seed_text),
            temperature=config.temperature,
            top_k=config.top_k,
            top_p=config.top_p,
            random_seed=config.random_seed,
        )
        rows = zip(result.tokens.numpy().tolist(), result.lengths.numpy().tolist())
        return [seed_text + self.vocab.decode(tokens[:length]) for tokens, length in rows]

    def _state_after(self, prompt_ids: list[int], num: int):
        """The model's state after reading `prompt_ids`, repeated for `num` rows."""
        if not prompt_ids:
            return self.model.initial_state(num)
        state = self._prime(tf.constant([prompt_ids], tf.int32))  # one row: every tune shares it
        return tf.nest.map_structure(lambda t: tf.repeat(t, num, axis=0), state)

    def _prime_state(self, prompt_ids):
        _, state = self.model(prompt_ids, return_state=True)  # prompt_ids (1, time)
        return state

    def _check(self, seed_text: str, config: SampleConfig) -> None:
        unknown = self.vocab.unknown_characters(seed_text)
        if unknown:
            shown = ", ".join(repr(c) for c in unknown[:10])
            raise GenerationError(
                f"the seed has characters the model's vocabulary lacks: {shown}; "
                "remove them or train on tunes that use them"
            )
        problems = [
            (config.num >= 1, f"num must be at least 1, got {config.num}"),
            (config.temperature > 0, f"temperature must be above 0, got {config.temperature}"),
            (0 < config.top_p <= 1, f"top_p must be in (0, 1], got {config.top_p}"),
            (
                0 <= config.top_k <= len(self.vocab),
                f"top_k must be between 0 (off) and the vocabulary size {len(self.vocab)}, "
                f"got {config.top_k}",
            ),
            (
                -(2**63) <= config.random_seed < 2**63,
                f"random_seed must fit in 64 bits, got {config.random_seed}",
            ),
            (
                config.max_length > len(seed_text),
                f"max_length {config.max_length} must exceed the seed's length "
                f"({len(seed_text)} characters)",
            ),
        ]
        for ok, message in problems:
            if not ok:
                raise GenerationError(message)
