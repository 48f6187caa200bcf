"""Seed text -> ids -> model + sampler -> new ABC tunes.

The model reads BOS + the seed once, in one batched call that returns its state; the tunes are then
sampled together as one batch inside the sampler's compiled loop, one `model.step` per character.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from musicgen.config import RunConfig, SampleConfig
from musicgen.data.vocab import BOS, Vocabulary
from musicgen.errors import GenerationError, RenderError
from musicgen.generation.sampling import Sampler
from musicgen.music.abc import read_text_file, split_tunebook
from musicgen.music.keyroot import Homes, move_home, run_homes, seed_to_common_root
from musicgen.tfsetup import import_tensorflow

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


MAX_TITLE = 60  # characters of a title the model writes for a seed without one


def _wants_title(seed_text: str) -> bool:
    """True for a seed that is an `X:` line and header fields without `T:` and without music."""
    lines = seed_text.splitlines()
    if not lines or not lines[0].startswith("X:") or not seed_text.endswith("\n"):
        return False
    fields = [line for line in lines if len(line) >= 2 and line[1] == ":" and line[0].isalpha()]
    return len(fields) == len(lines) and not any(line.startswith("T:") for line in lines)


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
        self.sampler = Sampler(
            lambda token_ids, state, index: model.step(token_ids, state),
            jit_compile=getattr(model, "xla_decode", False),
        )
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

        A seed that is a tune's header without a title (`X:1\nM:6/8\nK:D\n`, as `--key` and
        `--meter` build it) first gets a title written by the model for each tune: real tunes have
        one (`evaluate`'s header check asks for it), and in the corpus `T:` comes right after `X:`,
        before any field a seed gives.

        Args:
            seed_text: the start of every tune (may be empty).
            config: number of tunes, temperature, top-k, top-p, total length in characters including
                the seed, and the random seed. The same seed, model and config give the same tunes.

        Returns:
            `config.num` texts, each `seed_text` followed by the sampled characters up to, not
            including, the end-of-tune token (with a title line after `X:` when the seed had
            none); at most `config.max_length` characters.

        Raises:
            GenerationError: a setting is out of range or the seed has characters the model's
                vocabulary lacks.
        """
        self.check(seed_text, config)
        if _wants_title(seed_text) and config.max_length > len(seed_text) + MAX_TITLE + 4:
            return self._generate_titled(seed_text, config)
        prompt = [BOS, *self.vocab.encode(seed_text)]
        state = self._state_after(prompt[:-1], config.num)
        return self._continue(state, [prompt[-1]] * config.num, [seed_text] * config.num, config)

    def _continue(self, state, last_ids: list[int], starts: list[str], config) -> list[str]:
        """Samples on from `state`, row r's text so far being `starts[r]` (all of one length)."""
        result = self.sampler(
            state,
            tf.constant(last_ids, tf.int32),
            config.max_length - len(starts[0]),
            temperature=config.temperature,
            top_k=config.top_k,
            top_p=config.top_p,
            random_seed=config.random_seed,
        )
        rows = zip(starts, result.tokens.numpy().tolist(), result.lengths.numpy().tolist())
        return [start + self.vocab.decode(tokens[:length]) for start, tokens, length in rows]

    def _generate_titled(self, seed_text: str, config: SampleConfig) -> list[str]:
        """Titles first (the model continues `X:N\nT:`), then each tune's body after its title.

        Titles are padded with spaces to one length so every row's prompt has the same length
        (one batched priming pass; the Transformer's cache positions stay aligned); the padding is
        removed from the texts returned.
        """
        x_line, rest = seed_text.split("\n", 1)
        title_prompt = f"{x_line}\nT:"
        title_config = dataclasses.replace(config, max_length=len(title_prompt) + MAX_TITLE)
        titles = [
            text[len(title_prompt) :].split("\n", 1)[0].strip()[:MAX_TITLE] or "Untitled"
            for text in self.generate(title_prompt, title_config)
        ]
        width = max(len(title) for title in titles)
        starts = [f"{title_prompt}{title.ljust(width)}\n{rest}" for title in titles]
        rows = [[BOS, *self.vocab.encode(start)] for start in starts]  # one length
        state = self._prime(tf.constant([row[:-1] for row in rows], tf.int32))
        texts = self._continue(state, [row[-1] for row in rows], starts, config)
        return [
            text.replace(f"T:{title.ljust(width)}\n", f"T:{title}\n", 1)
            for text, title in zip(texts, titles)
        ]

    def _state_after(self, prompt_ids: list[int], num: int):
        """The model's state after reading `prompt_ids`, repeated for `num` rows."""
        if not prompt_ids:
            return self.model.initial_state(num)
        state = self._prime(tf.constant([prompt_ids], tf.int32))  # one row: every tune shares it
        return tf.nest.map_structure(lambda t: tf.repeat(t, num, axis=0), state)

    def _prime_state(self, prompt_ids):
        _, state = self.model(prompt_ids, return_state=True)  # prompt_ids (1, time)
        return state

    def check(self, seed_text: str, config: SampleConfig) -> None:
        """Raises GenerationError when `seed_text` or `config` cannot be sampled from."""
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


def generate_at_home(
    generator: Generator,
    seed_text: str,
    sample: SampleConfig,
    config: RunConfig | None,
    run_dir: Path,
) -> list[str]:
    """`generator.generate`, for a run trained with `common_root` (`musicgen.music.keyroot`) with
    the seed first moved to root C and every tune then moved to the seed's root, or to one of the
    home keys the run recorded; for any other run, `generate` itself. Every tune starts with the
    seed as given, also one whose music cannot be read and so stays at root C after it.

    Raises:
        GenerationError: as `Generator.generate`, or the seed's key or music cannot be read.
    """
    if config is None or not config.data.common_root:
        return generator.generate(seed_text, sample)
    generator.check(seed_text, sample)  # before the seed is read as music: says what to do
    try:
        rooted, root = seed_to_common_root(seed_text)
    except RenderError as exc:
        raise GenerationError(f"cannot read the seed's key and music: {exc}") from None
    texts = generator.generate(rooted, sample)
    homes = run_homes(run_dir)
    if homes is None and root is None:
        return texts  # no home keys recorded: the tunes stay at root C, as the model wrote them
    moved = move_home(texts, homes or Homes(), root, sample.random_seed)
    if rooted == seed_text:
        return moved
    # A tune that could not be moved home (its music unreadable) still starts with the seed as
    # given; what the model wrote after it stays as written.
    return [
        _with_seed(text, rooted, seed_text) if after == text else after
        for text, after in zip(texts, moved)
    ]


def _with_seed(text: str, rooted: str, seed_text: str) -> str:
    """`text`, which continues the seed moved to root C (`rooted`), with the seed as given in
    its place; after a header seed's `X:` line, the title the model wrote stays."""
    if text.startswith(rooted):
        return seed_text + text[len(rooted) :]
    x_line, _, rest = rooted.partition("\n")
    seed_x_line, _, seed_rest = seed_text.partition("\n")
    if x_line != seed_x_line or not text.startswith(f"{x_line}\nT:"):
        return text
    body = text.find("\n", len(x_line) + 1) + 1  # after the title line
    if body == 0 or not text.startswith(rest, body):
        return text
    return text[:body] + seed_rest + text[body + len(rest) :]
