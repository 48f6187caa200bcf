"""The page's form: every value checked and bounded before any model work is queued.

A bad value is a `FieldError` naming the form field, which the app answers with 400 and
`{"field": ..., "error": ...}` so the page can show the message next to that field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from musicgen.config import SampleConfig


class FieldError(Exception):
    """One form field holds a value the server will not use."""

    def __init__(self, field: str, error: str):
        super().__init__(f"{field}: {error}")
        self.field = field
        self.error = error

    def as_json(self) -> dict:
        return {"field": self.field, "error": self.error}


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; the page's inputs carry the same bounds."""

    max_tunes: int = 8
    min_length: int = 64
    max_length: int = 2000  # characters per tune, opening included
    max_opening: int = 1000  # characters of ABC the user may type
    max_title: int = 80
    min_temperature: float = 0.05
    max_temperature: float = 3.0
    max_random_seed: int = 2**31 - 1


@dataclass(frozen=True)
class GenerateRequest:
    """A checked request: which model, what header, how to sample."""

    model: str
    key: str = ""  # "" leaves the choice to the model (or to the opening's K: line)
    meter: str = ""
    tune_type: str = ""
    title: str = ""
    opening: str = ""
    num: int = SampleConfig.num
    temperature: float = SampleConfig.temperature
    top_p: float = SampleConfig.top_p
    max_length: int = SampleConfig.max_length
    random_seed: int = SampleConfig.random_seed

    def sample_config(self) -> SampleConfig:
        return SampleConfig(
            num=self.num,
            temperature=self.temperature,
            top_p=self.top_p,
            max_length=self.max_length,
            random_seed=self.random_seed,
        )


FIELDS = (
    "model", "key", "meter", "tune_type", "title", "opening",
    "num", "temperature", "top_p", "max_length", "random_seed",
)  # fmt: skip


def parse_request(
    raw: object, model_ids: Sequence[str], limits: Limits = Limits()
) -> GenerateRequest:
    """Checks the JSON object the page posts and returns the request it asks for.

    Args:
        raw: the decoded JSON body; numbers may come as numbers or as the strings a form holds.
        model_ids: the models this server offers (never paths: a model is chosen by id).
        limits: the bounds of this server.

    Raises:
        FieldError: the first field (in form order) whose value is missing, malformed or out of
            bounds; field "form" when the body is not a JSON object or names an unknown field.
    """
    if not isinstance(raw, Mapping):
        raise FieldError("form", "expected a JSON object of form fields")
    unknown = sorted(str(name) for name in raw if name not in FIELDS)
    if unknown:
        raise FieldError("form", f"unknown field {unknown[0][:40]!r}")
    defaults = GenerateRequest(model=model_ids[0] if model_ids else "")
    model = _text(raw, "model", defaults.model, 200)
    if model not in model_ids:
        raise FieldError("model", "no such model on this server; reload the page")
    title = _text(raw, "title", "", limits.max_title)
    if any(c in title for c in "\r\n%"):
        raise FieldError("title", "one line of text without '%'")
    opening = _text(raw, "opening", "", limits.max_opening, multiline=True)
    return GenerateRequest(
        model=model,
        key=_header_value(raw, "key"),
        meter=_header_value(raw, "meter"),
        tune_type=_header_value(raw, "tune_type"),
        title=title,
        opening=opening.replace("\r\n", "\n").replace("\r", "\n"),
        num=_integer(raw, "num", defaults.num, 1, limits.max_tunes),
        temperature=_number(
            raw, "temperature", defaults.temperature, limits.min_temperature, limits.max_temperature
        ),
        top_p=_number(raw, "top_p", defaults.top_p, 0.01, 1.0),
        max_length=_integer(
            raw, "max_length", defaults.max_length, limits.min_length, limits.max_length
        ),
        random_seed=_integer(raw, "random_seed", defaults.random_seed, 0, limits.max_random_seed),
    )


def _text(raw: Mapping, field: str, default: str, longest: int, multiline: bool = False) -> str:
    value = raw.get(field, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise FieldError(field, "expected text")
    if len(value) > longest:
        raise FieldError(field, f"at most {longest} characters, got {len(value)}")
    allowed = "\n\r\t" if multiline else ""
    if any(ord(c) < 32 and c not in allowed for c in value):
        raise FieldError(field, "holds control characters")
    return value.strip() if not multiline else value.strip("\n\r ")


def _header_value(raw: Mapping, field: str) -> str:
    """A key, meter or tune type: short, one line; checked against the model's tunes later."""
    value = _text(raw, field, "", 40)
    if any(c in value for c in "\r\n%[]"):
        raise FieldError(field, "one short value without '%', '[' or ']'")
    return value


def _integer(raw: Mapping, field: str, default: int, lowest: int, highest: int) -> int:
    value = _field_value(raw, field, default, lambda text: int(text, 10), "a whole number")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise FieldError(field, "expected a whole number")
    if not lowest <= value <= highest:
        raise FieldError(field, f"must be between {lowest} and {highest}, got {value}")
    return value


def _number(raw: Mapping, field: str, default: float, lowest: float, highest: float) -> float:
    value = _field_value(raw, field, default, float, "a number")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise FieldError(field, "expected a number")
    if not lowest <= value <= highest:
        raise FieldError(field, f"must be between {lowest:g} and {highest:g}, got {value:g}")
    return float(value)


def _field_value(raw: Mapping, field: str, default, parse, expected: str):
    """The field as sent: a JSON value as it is, text parsed (blank: `default`), or, when the field
    is absent, `default`."""
    value = raw.get(field, default)
    if not isinstance(value, str):
        return value
    value = value.strip()
    if value == "":
        return default
    try:
        return parse(value)
    except ValueError:
        raise FieldError(field, f"expected {expected}") from None
