"""One root for every tune: tunes trained on with their key's root moved to C, generated ones moved
home.

Issue 13: a model trained on tunes in their own keys ends half of its tunes on the wrong note. The
fact it needs, which note is home, is written once in the `K:` line, hundreds of characters before
the last bar, and the same melodic shape ends on D in a D tune and on G in a G tune. With
`DataConfig.common_root` every tune is transposed (`transpose.transpose_tune`, every pitch moved
by exactly the interval) so that its header key's root is C, its mode kept: `K:D` becomes `K:C`,
`K:Ador` `K:Cdor`, `K:Em` `K:Cm`. Home is then always C, whatever the mode, and the model learns
it from every tune. (folk-rnn trains on its tunes moved to one root the same way.)

- **Which way.** A tune moves by the interval of at most a tritone that takes its root to C
  (`root_shift`: D down 2, G up 5, A up 3, F# down 6), so its range moves as little as it can.
- **Which tunes.** Training and validation tunes alike (validation bits/char are measured on what
  the model reads). A tune that cannot be moved (the renderer cannot read it, a note would leave
  MIDI's range) or whose key names no root (`K:none`, the pipe keys `K:HP`) is skipped and
  counted in the corpus report, as any unusable tune is.
- **Home keys.** The roots the training tunes had, counted per mode (`Homes`), are recorded in the
  run's `corpus.json`, so generated tunes can be moved back into the keys the corpus plays in.
- **Generating.** A seed with a `K:` line (`--key D`, or a seed file) is moved to root C before the
  model reads it, and every tune it writes is moved to the seed's root; without one, each tune is
  moved to a root drawn, with the sampling seed, from the home keys of the mode the model wrote
  (`K:Cdor` takes a root Dorian tunes had). `--key` is therefore any root in a mode the model
  knows. A tune that cannot be moved back (the model wrote something the reader refuses) is kept as
  the model wrote it.

No TensorFlow here: the corpus cache, `evaluate` and the web page use it too.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from musicgen.errors import ParseError, RenderError
from musicgen.music import abc_reader, theory
from musicgen.music.abc_reader import PIPE_KEYS, Key
from musicgen.music.transpose import transpose_tune

ROOT = "C"
NO_ROOT = "no-root"  # why a tune cannot be moved: its key names no root
UNMOVABLE = "no-common-root"  # the corpus report's reason for a tune skipped so
_NAME = re.compile(r"^([A-G][#b]?)(.*)$")  # a key's name: root, then how its mode is written


def key_root(key: Key) -> tuple[str, str] | None:
    """(root, mode suffix) of a key's name: "A Dorian" ("A", " Dorian"), "F#m" ("F#", "m"), "G"
    ("G", ""); None for `K:none` and the pipe keys, which name no root."""
    if key.name == "none" or key.name in PIPE_KEYS:
        return None
    match = _NAME.match(key.name)
    return (match.group(1), match.group(2)) if match else None


def pitch_class(root: str) -> int:
    return (theory.STEPS[root[0]] + theory.SIGNS[root[1:]]) % 12


def root_shift(root: str) -> int:
    """Semitones that take `root` to C, -6 to 5: D -2, G 5, A 3, F# -6."""
    shift = -pitch_class(root) % 12
    return shift - 12 if shift >= 6 else shift


def header_root(text: str) -> tuple[str, str] | None:
    """(root, mode suffix) of a tune's header key; None when it names no root.

    Raises:
        RenderError: the tune has no `K:` or one the reader cannot read.
    """
    return key_root(abc_reader.split_tune(text)[0].key)


def to_common_root(text: str) -> tuple[str, tuple[str, str]]:
    """A tune moved so its header key's root is C, and the (root, mode suffix) it had.

    Raises:
        RenderError: the tune cannot be read or moved ("no-key", "bad-key", "bad-note"...), or its
            key names no root (reason NO_ROOT).
    """
    root = header_root(text)
    if root is None:
        raise RenderError("its key names no root (K:none or a pipe key)", NO_ROOT)
    return transpose_tune(text, root_shift(root[0])), root


@dataclass
class Homes:
    """The roots a corpus's tunes had, per mode: mode suffix ("", "m", " Dorian"...) -> root ->
    tunes. What generated tunes are moved back into."""

    roots: dict[str, Counter] = field(default_factory=dict)

    def add(self, root: tuple[str, str]) -> None:
        name, mode = root
        self.roots.setdefault(mode, Counter())[name] += 1

    def choose(self, mode: str, rng: random.Random) -> str | None:
        """A root drawn from the mode's home keys (all modes' when the corpus had none in it)."""
        counts = self.roots.get(mode)
        if not counts:
            counts = sum(self.roots.values(), Counter())
        if not counts:
            return None
        names = sorted(counts)
        return rng.choices(names, weights=[counts[n] for n in names])[0]

    def key_counts(self) -> dict[str, int]:
        """Key name ("D", "Em", "A Dorian") -> tunes, commonest first."""
        counts = Counter(
            {root + mode: n for mode, roots in self.roots.items() for root, n in roots.items()}
        )
        return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))

    def to_json(self) -> dict:
        return {mode: dict(counts.most_common()) for mode, counts in sorted(self.roots.items())}

    @classmethod
    def from_json(cls, raw: dict) -> Homes:
        return cls(
            {str(m): Counter({str(r): int(n) for r, n in c.items()}) for m, c in raw.items()}
        )


def unmovable_error(source: str, exc: RenderError) -> ParseError:
    """The corpus report's record of a tune that `to_common_root` refused."""
    return ParseError(f"{source}: cannot be moved to root C: {exc}", UNMOVABLE)


def common_root_texts(texts: Iterable[str]) -> tuple[list[str], Counter]:
    """Each text moved to root C, and the skip reasons of those that could not be."""
    moved, skipped = [], Counter()
    for text in texts:
        try:
            moved.append(to_common_root(text)[0])
        except RenderError as exc:
            skipped[exc.reason] += 1
    return moved, skipped


def movable_pairs(texts: Iterable[str]) -> tuple[list[str], list[str]]:
    """(the texts that can be moved to root C, those texts moved), in the same order."""
    written, moved = [], []
    for text in texts:
        try:
            moved.append(to_common_root(text)[0])
        except RenderError:
            continue
        written.append(text)
    return written, moved


def home_bits(written_texts: Iterable[str], homes: Homes) -> tuple[float, int]:
    """What a model at root C must add to score tunes in their own keys.

    Generating, each tune's root is drawn from the home keys of its mode (`move_home`), so the
    probability of a tune as written is that of the tune at root C times that of its root. Roots
    are counted by pitch class (the transposer spells them), add-one smoothed over the 12, so a
    root the training tunes never had in that mode costs bits rather than infinity.

    Returns:
        (bits of every tune's root, the tunes' characters plus one end-of-tune each).
    """
    classes: dict[str, Counter] = {}  # mode -> pitch class of the root -> tunes

    def by_class(mode: str) -> Counter:
        if mode not in classes:
            counts = homes.roots.get(mode) or sum(homes.roots.values(), Counter())
            classes[mode] = Counter()
            for name, count in counts.items():
                classes[mode][pitch_class(name)] += count
        return classes[mode]

    bits, characters = 0.0, 0
    for text in written_texts:
        root, mode = header_root(text) or (ROOT, "")
        roots = by_class(mode)
        share = (roots[pitch_class(root)] + 1) / (sum(roots.values()) + 12)
        bits -= math.log2(share)
        characters += len(text) + 1
    return bits, characters


def common_root_split(train: list, validation: list) -> tuple[list, list, Homes]:
    """Tunes in memory (`abc.Tune`), split as training splits them, each moved to root C (one that
    cannot be is left out), and the training tunes' home keys."""
    homes = Homes()

    def moved(tunes, count):
        kept = []
        for tune in tunes:
            try:
                text, root = to_common_root(tune.text)
            except RenderError:
                continue
            if count:
                homes.add(root)
            kept.append(replace(tune, text=text))
        return kept

    return moved(train, True), moved(validation, False), homes


def seed_to_common_root(seed_text: str) -> tuple[str, str | None]:
    """A seed moved to root C, and the root its tunes go home to (None: the seed has no `K:` line,
    or one naming no root, and each tune's root is drawn from the home keys).

    Raises:
        RenderError: the seed's `K:` line or music cannot be read.
    """
    if not any(line.startswith("K:") for line in seed_text.splitlines()):
        return seed_text, None
    root = header_root(seed_text)
    if root is None:
        return seed_text, None
    return transpose_tune(seed_text, root_shift(root[0])), root[0]


def run_homes(run_dir) -> Homes | None:
    """The home keys a run recorded in its `corpus.json`; None when it has none (a run trained
    on tunes in their own keys)."""
    try:
        record = json.loads((Path(run_dir) / "corpus.json").read_text(encoding="utf-8"))
        return Homes.from_json(record["homes"]) if "homes" in record else None
    except (OSError, ValueError, TypeError, AttributeError, KeyError):
        return None


def move_home(texts: list[str], homes: Homes, root: str | None, random_seed: int) -> list[str]:
    """Generated tunes (written at root C) moved to `root`, or each to a root drawn from `homes`
    for the mode its `K:` names; a tune that cannot be read or moved is kept as written."""
    rng = random.Random(random_seed)
    moved = []
    for text in texts:
        try:
            written = header_root(text)
            target = root if root is not None or written is None else homes.choose(written[1], rng)
            if written is None or target is None:
                moved.append(text)
                continue
            moved.append(transpose_tune(text, root_shift(written[0]) - root_shift(target)))
        except RenderError:
            moved.append(text)
    return moved
