"""Generation controls: key, meter, tune type and title, made into the header a model starts from.

`generate --key D --meter 6/8 --type jig --title "..."` (and the web page's controls) build the
start of a tune's header, in the order the training corpus writes its fields (for the bundled
corpus `X:`, `T:`, `R:`, `M:`, `L:`, `K:`), and the model writes the rest. Values are checked
against what the model's training tunes used (`KnownHeaders`, recorded in the run's `corpus.json`
by `train`): a key, meter or type the model never saw is a GenerationError naming the ones it
knows. A field the controls leave out but a later one needs is taken from the training tunes: the
commonest unit length `L:` of tunes in that meter, and the commonest meter of tunes of that type.

No TensorFlow here: the web page calls `known_headers` and `build_seed` too.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from musicgen.errors import GenerationError, RenderError
from musicgen.music.abc import header_fields
from musicgen.music.abc_reader import parse_key

DEFAULT_ORDER = "XTRMLQPK"  # ABC 2.1 asks for X first and K last; the rest as the bundled corpus
LISTED = 30  # known values a message names before "and N more"
_CONTROLS = {"K": "--key", "M": "--meter", "R": "--type", "T": "--title"}


@dataclass(frozen=True)
class KnownHeaders:
    """The header values a model's training tunes used, each with how many tunes used it.

    Attributes:
        tunes: training tunes counted.
        keys: `K:` values as written (e.g. "D", "Ador", "E Minor").
        meters: `M:` values ("6/8", "C|"...).
        types: `R:` values as written ("reel", "Reel", "double jig"...).
        units: meter -> `L:` value -> tunes (a tune without `L:` is not counted).
        type_meters: type, lower case -> meter -> tunes.
        orders: the letters of each tune's header fields in order, each once ("XTRMLK") -> tunes.
    """

    tunes: int = 0
    keys: dict[str, int] = field(default_factory=dict)
    meters: dict[str, int] = field(default_factory=dict)
    types: dict[str, int] = field(default_factory=dict)
    units: dict[str, dict[str, int]] = field(default_factory=dict)
    type_meters: dict[str, dict[str, int]] = field(default_factory=dict)
    orders: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of_training(cls, texts: Iterable[str], homes=None) -> KnownHeaders:
        """The header values of a run's training tunes; for a run that read them at root C,
        `homes` (`keyroot.Homes`) gives the keys they were in, so `--key D` asks for D."""
        known = cls.from_texts(texts)
        if homes is None:
            return known
        return dataclasses.replace(known, keys=homes.key_counts())

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> KnownHeaders:
        """Counts the header values of normalised tunes (`musicgen.music.abc.Tune.text`)."""
        counts: dict[str, Counter] = {name: Counter() for name in ("K", "M", "R", "order")}
        units: dict[str, Counter] = {}
        type_meters: dict[str, Counter] = {}
        tunes = 0
        for text in texts:
            tunes += 1
            fields = {letter: value.strip() for letter, value in header_fields(text).items()}
            for letter in ("K", "M", "R"):
                if fields.get(letter):
                    counts[letter][fields[letter]] += 1
            meter = fields.get("M", "")
            if meter and fields.get("L"):
                units.setdefault(meter, Counter())[fields["L"]] += 1
            if meter and fields.get("R"):
                type_meters.setdefault(fields["R"].lower(), Counter())[meter] += 1
            counts["order"]["".join(dict.fromkeys(fields))] += 1
        return cls(
            tunes=tunes,
            keys=_commonest_first(counts["K"]),
            meters=_commonest_first(counts["M"]),
            types=_commonest_first(counts["R"]),
            units={meter: _commonest_first(c) for meter, c in units.items()},
            type_meters={kind: _commonest_first(c) for kind, c in type_meters.items()},
            orders=_commonest_first(counts["order"]),
        )

    def to_json(self) -> dict:
        return {
            "tunes": self.tunes,
            "keys": self.keys,
            "meters": self.meters,
            "types": self.types,
            "units": self.units,
            "type_meters": self.type_meters,
            "orders": self.orders,
        }

    @classmethod
    def from_json(cls, raw: dict) -> KnownHeaders:
        return cls(**{name: raw[name] for name in cls.__dataclass_fields__ if name in raw})

    def field_order(self, letters: str) -> str:
        """`letters` in the order of the commonest training header holding them all."""
        for order in self.orders:
            if all(letter in order for letter in letters):
                return "".join(letter for letter in order if letter in letters)
        rank = {letter: i for i, letter in enumerate(DEFAULT_ORDER)}
        return "".join(sorted(letters, key=lambda letter: rank.get(letter, len(rank) - 1.5)))


def _commonest_first(counts: Counter) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def known_headers(run_dir: str | Path) -> KnownHeaders:
    """The header values the run's training tunes used.

    Read from the run's `corpus.json` (written by `train`); for a run trained before it recorded
    them, counted again from the run's corpus (its `config.json` names it), split as `train` does.

    Raises:
        GenerationError: the run records none and its corpus cannot be read.
    """
    run_dir = Path(run_dir)
    try:
        record = json.loads((run_dir / "corpus.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = {}
    if isinstance(record, dict) and isinstance(record.get("headers"), dict):
        try:
            return KnownHeaders.from_json(record["headers"])
        except TypeError:
            pass  # a damaged record: count again
    return _count_training_headers(run_dir)


def _count_training_headers(run_dir: Path) -> KnownHeaders:
    from musicgen.config import RunConfig
    from musicgen.data.encoded import load_encoded_corpus
    from musicgen.errors import MusicgenError

    try:
        data = RunConfig.load(run_dir / "config.json").data
        corpus = load_encoded_corpus(
            list(data.paths) or None,
            fraction=data.validation_fraction,
            common_root=data.common_root,
        )
    except MusicgenError as exc:
        raise GenerationError(
            f"cannot check the header controls: {run_dir}/corpus.json does not list the training "
            f"tunes' keys and meters, and their corpus cannot be read ({exc})"
        ) from None
    return KnownHeaders.of_training(corpus.texts("train"), corpus.homes)


def build_seed(
    *,
    key: str | None = None,
    meter: str | None = None,
    tune_type: str | None = None,
    title: str | None = None,
    seed_text: str = "",
    known: KnownHeaders,
) -> str:
    """The text a model is primed with: the header the controls ask for, then `seed_text`'s music.

    Without controls, `seed_text` is returned as it is. Otherwise the header holds `X:` (the
    seed's, else 1), then the seed's header fields and the controls, in the training corpus's
    order, up to the last field given; a field that must come before a given one is filled from
    the training tunes (`M:` the commonest meter of the type's tunes, or of all; `L:` the
    commonest unit of the meter's tunes). When `seed_text` carries music after its header, the
    header is closed with `K:`, so a key must then be known.

    Args:
        key, meter, tune_type, title: the controls; None or "" leaves one out. `tune_type` is the
            `R:` field (reel, jig, hornpipe...).
        seed_text: ABC to continue: header fields and/or the opening bars of a tune.
        known: the header values the model's training tunes used (see `known_headers`).

    Returns:
        The seed text, ending in a newline when it ends in a header line.

    Raises:
        GenerationError: a value the training tunes never used (the message names those they
            did), a title on several lines, a control that clashes with the seed's own header, or
            an opening without a key.
    """
    asked = {
        letter: value.strip()
        for letter, value in (("K", key), ("M", meter), ("R", tune_type), ("T", title))
        if value is not None and value.strip()
    }
    if not asked:
        return seed_text
    if "\n" in asked.get("T", "") or "\r" in asked.get("T", ""):
        raise GenerationError("--title must be one line")
    fields, body = _split_seed(seed_text)
    chosen = {letter: _known_value(letter, value, known) for letter, value in asked.items()}
    for letter, value in chosen.items():
        _check_no_clash(letter, value, fields)
    fields = {**chosen, **fields}
    fields.setdefault("X", "1")
    _fill_missing(fields, known, has_music=bool(body.strip()))
    order = known.field_order("".join(fields))
    header = "".join(f"{letter}:{fields[letter]}\n" for letter in order)
    return header + body


def _split_seed(seed_text: str) -> tuple[dict[str, str], str]:
    """The seed's leading header fields (letter -> value, the first of each) and the rest."""
    fields: dict[str, str] = {}
    lines = seed_text.splitlines(keepends=True)
    for index, line in enumerate(lines):
        stripped = line.strip()
        if len(stripped) >= 2 and stripped[1] == ":" and stripped[0].isalpha():
            fields.setdefault(stripped[0], stripped[2:].strip())
            if stripped[0] == "K":
                return fields, "".join(lines[index + 1 :])
            continue
        return fields, "".join(lines[index:])
    return fields, ""


def _known_value(letter: str, value: str, known: KnownHeaders) -> str:
    """`value` as the training tunes spell it (the commonest spelling that matches)."""
    if letter == "T":
        return value
    table = {"K": known.keys, "M": known.meters, "R": known.types}[letter]
    if value in table and letter != "R":  # a type is written as most tunes write it ("reel")
        return value
    matching = [known_value for known_value in table if _same(letter, known_value, value)]
    if matching:
        return matching[0]
    raise GenerationError(_unknown_message(letter, value, table, known.tunes))


def _same(letter: str, a: str, b: str) -> bool:
    """Spellings the same field value may have: case and spaces do not matter ("Ador", "A dor")."""
    if letter == "M":
        return a.replace(" ", "") == b.replace(" ", "")
    if letter == "K":  # "Ador" is "A Dorian", "Em" "E minor"
        try:
            return parse_key(a).name == parse_key(b).name
        except RenderError:
            pass
    return a.replace(" ", "").lower() == b.replace(" ", "").lower()


def _unknown_message(letter: str, value: str, table: dict[str, int], tunes: int) -> str:
    what = {"K": "key", "M": "meter", "R": "tune type"}[letter]
    option = _CONTROLS[letter]
    if not table:
        return (
            f"{option} {value}: the model's {tunes} training tunes have no {letter}: field, so it "
            f"cannot be asked for a {what}; leave out {option}"
        )
    names = list(dict.fromkeys(_display(letter, name) for name in table))
    shown = ", ".join(names[:LISTED])
    more = f" and {len(names) - LISTED} rarer" if len(names) > LISTED else ""
    return (
        f"{option} {value}: not a {what} the model's training tunes use; they use {shown}{more} "
        "(commonest first)"
    )


def _display(letter: str, name: str) -> str:
    return name.lower() if letter == "R" else name


def _check_no_clash(letter: str, value: str, fields: dict[str, str]) -> None:
    if letter in fields and not _same(letter, fields[letter], value):
        raise GenerationError(
            f"{_CONTROLS[letter]} {value} clashes with the seed's header "
            f"{letter}:{fields[letter]}; leave out {_CONTROLS[letter]} or change the seed"
        )


def _fill_missing(fields: dict[str, str], known: KnownHeaders, *, has_music: bool) -> None:
    """Adds the fields that must come before the last one given, from the training tunes.

    `L:` is not added before music of the seed: its notes were written for ABC's default length.
    """
    if has_music and "K" not in fields:
        raise GenerationError(
            "an opening of music after the header needs a key; pass --key (or put K: in the seed)"
        )
    if "M" not in fields and ("L" in fields or "K" in fields):
        meters = known.type_meters.get(fields.get("R", "").lower()) or known.meters
        if meters:
            fields["M"] = next(iter(meters))
    if "L" not in fields and "K" in fields and fields.get("M") and not has_music:
        units = known.units.get(fields["M"])
        if units:
            fields["L"] = next(iter(units))
