"""Transposition as data augmentation: every training tune also seen in other keys.

The same melodic shape then ends on another note under another `K:` line, so the model cannot learn
"tunes end on G" and must learn "tunes end on the tonic of their `K:`" (issue 13). Each copy is
`transpose.transpose_tune` of the tune: its notes, key signature and chord names rewritten, every
pitch moved by exactly the interval. Only training tunes are augmented: validation tunes stay as
they are, so bits/char stay comparable with runs trained without augmentation. A copy that cannot
be made (a tune the renderer cannot read, a note that would leave MIDI's range) is skipped and
counted by its `RenderError` reason; the tune itself is still trained on.

The copies are made once, when the corpus is encoded (`encoded_build.build`, its cache key
naming the intervals) or, for tunes in memory, before they are encoded (`augment_tunes`): the
training stream simply holds more tunes, and the window sampling, resume and `tf.distribute` do
not change.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Sequence

from musicgen.config import MAX_TRANSPOSE
from musicgen.errors import ConfigError, RenderError
from musicgen.music.transpose import transpose_tune

_RANGE = re.compile(r"^\s*([+-]?\d+)\s*\.\.\s*([+-]?\d+)\s*$")


def parse_shifts(text: str) -> tuple[int, ...]:
    """Semitones from a command-line value: "-5..6" (a range, both ends in, 0 left out) or a
    comma list such as "-2,2,5"; "" or "none" for none.

    Raises:
        ConfigError: not a range or list of whole numbers, or a shift beyond +-MAX_TRANSPOSE.
    """
    text = text.strip()
    if text.lower() in ("", "none", "0"):
        return ()
    matched = _RANGE.match(text)
    try:
        if matched:
            low, high = sorted(int(end) for end in matched.groups())
            shifts = [s for s in range(low, high + 1) if s != 0]
        else:
            shifts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(
            f"transpose: expected semitones such as -5..6 or -2,2,5, got {text!r}", "transpose"
        ) from None
    if any(abs(s) > MAX_TRANSPOSE for s in shifts):
        raise ConfigError(
            f"transpose: at most {MAX_TRANSPOSE} semitones either way, got {text!r}", "transpose"
        )
    return tuple(sorted(set(shifts) - {0}))


@dataclasses.dataclass
class AugmentReport:
    """What augmentation made of the training tunes.

    Attributes:
        shifts: the semitones each tune was moved by.
        tunes: training tunes read (each tried at every shift).
        copies: transposed copies added to the training tunes.
        skipped: `RenderError.reason` -> copies that could not be made for that reason.
    """

    shifts: tuple[int, ...]
    tunes: int = 0
    copies: int = 0
    skipped: Counter = dataclasses.field(default_factory=Counter)

    def summary(self) -> str:
        skipped = sum(self.skipped.values())
        reasons = ", ".join(f"{reason} {count}" for reason, count in self.skipped.most_common())
        return (
            f"transposed {self.tunes} training tunes by {list(self.shifts)} semitones: "
            f"{self.copies} copies added, {skipped} skipped" + (f" ({reasons})" if reasons else "")
        )

    def to_json(self) -> dict:
        return {
            "transpose": list(self.shifts),
            "tunes": self.tunes,
            "copies": self.copies,
            "skipped": dict(self.skipped),
        }

    @classmethod
    def from_json(cls, raw: dict) -> AugmentReport:
        return cls(
            shifts=tuple(int(s) for s in raw["transpose"]),
            tunes=int(raw["tunes"]),
            copies=int(raw["copies"]),
            skipped=Counter({str(k): int(v) for k, v in raw["skipped"].items()}),
        )


def transposed_copies(text: str, report: AugmentReport) -> list[tuple[int, str]]:
    """(shift, transposed text) for each of `report.shifts` the tune can be moved by; the others
    are counted in `report.skipped`."""
    report.tunes += 1
    copies = []
    for shift in report.shifts:
        try:
            copies.append((shift, transpose_tune(text, shift)))
        except RenderError as exc:
            report.skipped[exc.reason] += 1
    report.copies += len(copies)
    return copies


def copy_source(source: str, shift: int) -> str:
    """The provenance of a copy: its tune's source and the interval."""
    return f"{source} transposed {shift:+d}"


def augment_tunes(tunes: Sequence, shifts: Sequence[int]) -> tuple[list, AugmentReport]:
    """Each tune followed by its transposed copies (`dataclasses.replace` of the tune with the new
    text and source), and the report.

    Args:
        tunes: training tunes, dataclass objects with `text` and `source` (`abc.Tune`).
        shifts: semitones, as `DataConfig.transpose`.
    """
    report = AugmentReport(tuple(shifts))
    out = []
    for tune in tunes:
        out.append(tune)
        for shift, text in transposed_copies(tune.text, report):
            changes = {"text": text, "source": copy_source(tune.source, shift)}
            if hasattr(tune, "key"):
                changes["key"] = _key_of(text)
            out.append(dataclasses.replace(tune, **changes))
    return out, report


def _key_of(text: str) -> str:
    """The first K: value of a tune (its header's key)."""
    for line in text.splitlines():
        if line.startswith("K:"):
            return line[2:].strip()
    return ""
