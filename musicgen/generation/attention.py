"""Pictures of what a Transformer attends to: one heat map per layer and head for one tune.

Row i of a map is the character the model has just read, column j an earlier character, and the
colour how much weight character i gave to j when predicting what comes after i. A head that tracks
bar lines lights up the `|` columns; a head that recalls the previous phrase shows a diagonal stripe
one phrase to the left of the main diagonal.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from musicgen.data.vocab import BOS, Vocabulary
from musicgen.errors import GenerationError
from musicgen.files import atomic_write_bytes, safe_stem

# How special characters appear on the axes (DejaVu Sans, matplotlib's default font, has these).
_SHOWN = {"\n": "↵", " ": "␣"}
START_LABEL = "^"  # the start-of-tune token


@dataclass(frozen=True)
class HeadSummary:
    """One head's map, and how far back it looks on average (in characters)."""

    layer: int  # from 1
    head: int  # from 1
    mean_distance: float
    path: str


def attention_labels(text: str) -> list[str]:
    """The axis labels: the start token, then each character of `text` as drawn."""
    return [START_LABEL, *(_SHOWN.get(c, c) for c in text)]


def mean_attention_distance(weights: np.ndarray) -> float:
    """Average of (i - j) weighted by how much character i attends to j; (time, time) weights."""
    time = weights.shape[0]
    distance = np.arange(time)[:, None] - np.arange(time)[None, :]  # (time, time)
    return float((weights * np.maximum(distance, 0)).sum() / time)


def require_attention(model) -> None:
    """Raises GenerationError unless `model` has attention to draw."""
    if not hasattr(model, "attention_maps"):
        raise GenerationError(
            "attention maps need a Transformer run (train with --model transformer); "
            "this run is an LSTM, which has no attention to show"
        )


def write_attention_maps(model, vocab: Vocabulary, text: str, out_dir: Path, name: str):
    """Writes one PNG per layer and head of `model`'s attention over `text`.

    Args:
        model: a Transformer language model (with `attention_maps` and `context`).
        vocab: its vocabulary.
        text: the tune; the maps cover its first `context - 1` characters after the start token.
        out_dir: the folder for the PNGs (created).
        name: the tune's name; files are `<name>-layerL-headH.png`, made safe.

    Returns:
        A HeadSummary per layer and head, in order.

    Raises:
        GenerationError: the model has no attention (an LSTM).
    """
    require_attention(model)
    text = text[: model.context - 1]
    ids = np.array([[BOS, *vocab.encode(text)]], np.int32)
    labels = attention_labels(text)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = safe_stem(name, "tune")
    summaries = []
    for layer, weights in enumerate(model.attention_maps(ids), start=1):
        for head, head_weights in enumerate(weights[0], start=1):
            path = out_dir / f"{stem}-layer{layer}-head{head}.png"
            title = f"{name}: layer {layer}, head {head}"
            atomic_write_bytes(path, _heat_map_png(head_weights, labels, title))
            summaries.append(
                HeadSummary(layer, head, mean_attention_distance(head_weights), str(path))
            )
    return summaries


def _heat_map_png(weights: np.ndarray, labels: list[str], title: str) -> bytes:
    """A (time, time) weight matrix drawn with a character on every row and column."""
    from matplotlib.colors import PowerNorm
    from matplotlib.figure import Figure  # the Agg canvas, without pyplot's global state

    time = len(labels)
    cell = min(0.2, 36.0 / time)  # inches a character: 13 pixels up to 276 characters
    side = max(4.0, cell * time + 2.0)
    figure = Figure(figsize=(side + 1.0, side), dpi=100)
    axes = figure.add_subplot()
    # A square-root colour scale keeps weak but real attention visible beside the strong.
    image = axes.imshow(weights, cmap="viridis", norm=PowerNorm(0.5, vmin=0, vmax=1))
    font = max(3.0, min(9.0, cell * 72 * 0.8))  # points: a label fills most of its cell
    axes.set_xticks(range(time), labels, fontsize=font, family="DejaVu Sans")
    axes.set_yticks(range(time), labels, fontsize=font, family="DejaVu Sans")
    axes.tick_params(length=0, pad=1)
    axes.set_xlabel("attended-to character (earlier)")
    axes.set_ylabel("character just read")
    axes.set_title(title)
    figure.colorbar(image, ax=axes, fraction=0.03, pad=0.01, label="attention weight")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
