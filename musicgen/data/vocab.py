"""Character vocabulary with start-of-tune, end-of-tune, padding and unknown tokens."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from musicgen.errors import VocabularyError
from musicgen.files import atomic_write_text, read_run_file

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")
VOCAB_VERSION = 1


class Vocabulary:
    """Maps each character of the corpus to an id; ids 0-3 are the special tokens.

    Args:
        characters: the characters to know, in id order after the special tokens.
    """

    def __init__(self, characters: Iterable[str]):
        self.characters: tuple[str, ...] = tuple(characters)
        if len(set(self.characters)) != len(self.characters):
            raise VocabularyError("vocabulary characters must be unique")
        if any(len(c) != 1 for c in self.characters):
            raise VocabularyError("vocabulary entries must be single characters")
        self._ids = {c: i + len(SPECIAL_TOKENS) for i, c in enumerate(self.characters)}

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> Vocabulary:
        """Builds the vocabulary of every character in `texts`, sorted by code point."""
        seen: set[str] = set()
        for text in texts:
            seen.update(text)
        return cls(sorted(seen))

    def __len__(self) -> int:
        return len(SPECIAL_TOKENS) + len(self.characters)

    def __contains__(self, character: str) -> bool:
        return character in self._ids

    def unknown_characters(self, text: str) -> list[str]:
        """The distinct characters of `text` outside the vocabulary, in order of appearance."""
        return list(dict.fromkeys(c for c in text if c not in self._ids))

    def encode(self, text: str, *, strict: bool = True) -> list[int]:
        """Ids for `text`. Raises VocabularyError for an unknown character unless `strict` is False,
        in which case it becomes UNK."""
        if strict:
            unknown = self.unknown_characters(text)
            if unknown:
                shown = ", ".join(repr(c) for c in unknown[:5])
                raise VocabularyError(f"characters not in the vocabulary: {shown}")
        return [self._ids.get(c, UNK) for c in text]

    def encode_tune(self, text: str) -> list[int]:
        """BOS + text + EOS: one tune as the model sees it."""
        return [BOS, *self.encode(text), EOS]

    def decode(self, ids: Sequence[int]) -> str:
        """Text for `ids`; special tokens are dropped, except UNK which shows as U+FFFD."""
        n = len(SPECIAL_TOKENS)
        out = []
        for i in ids:
            i = int(i)
            if i >= n:
                out.append(self.characters[i - n])
            elif i == UNK:
                out.append("\ufffd")
        return "".join(out)

    def to_json(self) -> str:
        return (
            json.dumps(
                {
                    "version": VOCAB_VERSION,
                    "special_tokens": list(SPECIAL_TOKENS),
                    "characters": list(self.characters),
                },
                indent=1,
                ensure_ascii=True,
            )
            + "\n"
        )

    @classmethod
    def from_json(cls, text: str, source: str = "vocab.json") -> Vocabulary:
        try:
            raw = json.loads(text)
            if raw.get("version") != VOCAB_VERSION:
                raise VocabularyError(
                    f"{source}: vocabulary version {raw.get('version')!r}, expected {VOCAB_VERSION}"
                )
            if list(raw["special_tokens"]) != list(SPECIAL_TOKENS):
                raise VocabularyError(f"{source}: unexpected special tokens")
            return cls(raw["characters"])
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise VocabularyError(f"{source}: not a musicgen vocabulary ({exc})") from None

    def save(self, path: Path) -> None:
        atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        return cls.from_json(read_run_file(path, VocabularyError), source=str(path))
