"""The evaluation as a page a person reads: `report.md` with its plots beside it in one folder.

Plots (PNG, matplotlib's Agg canvas, no display needed): loss curves from the run's
`metrics.jsonl`, generated-vs-corpus pitch-class and note-length histograms, and a piano roll of
the first few valid generated tunes.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from musicgen.checks import ABC2MIDI_CHECK, HEADLINE_CHECKS
from musicgen.files import atomic_write_bytes, atomic_write_text

PIANO_ROLL_TUNES = 3
DURATION_LABELS = 10  # commonest note lengths shown in the histogram


def _figure(width: float = 7, height: float = 3.5):
    from matplotlib.figure import Figure  # Agg canvas, without pyplot's global state

    return Figure(figsize=(width, height), dpi=100)


def _save(figure, path: Path) -> None:
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())


def plot_loss(metrics_path: Path, path: Path) -> bool:
    """Training and validation bits per character against step; False if there is no log."""
    if not metrics_path.is_file():
        return False
    entries = []
    for line in metrics_path.read_text(encoding="utf-8").splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a torn last line of a run still writing
    figure = _figure()
    axes = figure.add_subplot()
    for key, label in (("bits_per_char", "training"), ("val_bits_per_char", "validation")):
        points = [(e["step"], e[key]) for e in entries if isinstance(e, dict) and key in e]
        if points:
            axes.plot(*zip(*points), label=label)
    axes.set_xlabel("step")
    axes.set_ylabel("bits per character")
    axes.grid(alpha=0.3)
    axes.legend()
    _save(figure, path)
    return True


def plot_histograms(distribution: dict, labels: list[str], title: str, path: Path) -> None:
    """Generated and corpus shares side by side for `labels`."""
    figure = _figure()
    axes = figure.add_subplot()
    positions = range(len(labels))
    for offset, side in ((-0.2, "corpus"), (0.2, "generated")):
        heights = [distribution[side].get(label, 0.0) for label in labels]
        axes.bar([p + offset for p in positions], heights, width=0.4, label=side)
    axes.set_xticks(list(positions), labels)
    axes.set_ylabel("share of notes")
    axes.set_title(title)
    axes.legend()
    _save(figure, path)


def plot_piano_roll(texts: list[str], path: Path) -> int:
    """Notes against time for up to PIANO_ROLL_TUNES tunes that render; returns how many."""
    from musicgen.errors import RenderError
    from musicgen.render import abc_to_performance

    performances = []
    for text in texts:
        try:
            performances.append(abc_to_performance(text))
        except RenderError:
            continue
        if len(performances) == PIANO_ROLL_TUNES:
            break
    if not performances:
        return 0
    figure = _figure(8, 2.2 * len(performances))
    for row, performance in enumerate(performances):
        axes = figure.add_subplot(len(performances), 1, row + 1)
        for note in performance.notes:
            axes.broken_barh([(note.start, note.end - note.start)], (note.pitch - 0.4, 0.8))
        axes.set_title(performance.title or "(untitled)", fontsize=9)
        axes.set_ylabel("MIDI pitch")
    axes.set_xlabel("seconds")
    _save(figure, path)
    return len(performances)


def write_report(result: dict, out: Path, metrics_path: Path | None = None) -> Path:
    """Writes `report.md` and its plots into `out`; returns the page's path."""
    out.mkdir(parents=True, exist_ok=True)
    images = []
    if metrics_path is not None and plot_loss(metrics_path, out / "loss.png"):
        images.append(("Loss curves of the run", "loss.png"))
    distributions = result["statistics"]["distributions"]
    pitch = distributions["pitch_class"]
    plot_histograms(pitch, list(pitch["corpus"]), "Pitch classes", out / "pitch_classes.png")
    images.append(("Pitch classes, generated vs corpus", "pitch_classes.png"))
    lengths = list(distributions["duration"]["corpus"])[:DURATION_LABELS]
    plot_histograms(
        distributions["duration"], lengths, "Note lengths (whole notes)", out / "durations.png"
    )
    images.append(("Note lengths, generated vs corpus", "durations.png"))
    valid = [t["abc"] for t in result["tunes"] if t["valid"]]
    if plot_piano_roll(valid, out / "piano_roll.png"):
        images.append(("Piano roll of the first valid generated tunes", "piano_roll.png"))
    page = out / "report.md"
    atomic_write_text(page, markdown(result, images))
    return page


def markdown(result: dict, images: list[tuple[str, str]]) -> str:
    """The page's text."""
    lines = [f"# Evaluation of {result.get('run_dir', 'a model')}", ""]
    lines += summary_lines(result)
    lines += ["", "## Validity", "", *validity_table(result), ""]
    lines += ["## Musical statistics (generated vs training corpus)", ""]
    lines += statistics_table(result) + [""]
    for caption, name in images:
        lines += [f"![{caption}]({name})", ""]
    return "\n".join(lines)


def summary_lines(result: dict) -> list[str]:
    """A few lines a terminal shows: likelihood, validity, novelty."""
    lines = []
    likelihood = result.get("likelihood")
    if likelihood and likelihood["bits_per_char"] is not None:
        lines.append(
            f"bits per character: {likelihood['bits_per_char']:.3f} on {likelihood['tunes']} tunes "
            f"({result.get('scored', '')}); {likelihood['unknown_characters']} characters outside "
            "the vocabulary"
        )
    generated = result["validity"]["generated"]
    real = result["validity"]["real"]
    lines.append(
        f"valid (every headline check): {generated['valid']} of {generated['tunes']} generated "
        f"tunes ({_percent(generated['valid_share'])}); real tunes {_percent(real['valid_share'])}"
    )
    ours, baseline = result["novelty"]["generated"], result["novelty"]["validation_tunes"]
    lines.append(
        f"copying a phrase of {ours['phrase_bars']}+ bars from a training tune: "
        f"{_percent(ours['copying_share'])} of generated tunes (unseen real tunes: "
        f"{_percent(baseline['copying_share'])})"
    )
    return lines


def validity_table(result: dict) -> list[str]:
    """Markdown rows: each check's pass rate, generated and real."""
    generated = result["validity"]["generated"]["checks"]
    real = result["validity"]["real"]["checks"]
    rows = ["| check | generated | real tunes |", "|---|---|---|"]
    for name in (*HEADLINE_CHECKS, ABC2MIDI_CHECK):
        if name in generated:
            note = "" if name in HEADLINE_CHECKS else " (not in the headline)"
            rows.append(f"| {name}{note} | {_percent(generated[name])} | {_percent(real[name])} |")
    generated_share = result["validity"]["generated"]["valid_share"]
    real_share = result["validity"]["real"]["valid_share"]
    rows.append(
        f"| **all headline checks** | {_percent(generated_share)} | {_percent(real_share)} |"
    )
    return rows


def statistics_table(result: dict) -> list[str]:
    """Markdown rows: single figures side by side, then each distribution's distances."""
    scalars = result["statistics"]["scalars"]
    rows = ["| figure | generated | corpus |", "|---|---|---|"]
    for name in scalars["corpus"]:
        rows.append(
            f"| {name} | {_number(scalars['generated'][name])} | "
            f"{_number(scalars['corpus'][name])} |"
        )
    rows += ["", "| distribution | total variation | Jensen-Shannon (bits) |", "|---|---|---|"]
    for name, compared in result["statistics"]["distributions"].items():
        rows.append(
            f"| {name} | {_number(compared['total_variation'])} | "
            f"{_number(compared['jensen_shannon'])} |"
        )
    return rows


def _percent(share: float | None) -> str:
    return "n/a" if share is None else f"{100 * share:.1f}%"


def _number(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)
