"""The evaluation as a page a person reads: `report.md` with its plots beside it in one folder.

Plots (PNG, matplotlib's Agg canvas, no display needed): loss curves from the run's
`metrics.jsonl`, generated-vs-corpus pitch-class and note-length histograms, the form histograms
(final note's degree, sections per tune, bars per section, tune length), and a piano roll of the
first few valid generated tunes.
"""

from __future__ import annotations

import io
from pathlib import Path

from musicgen.evaluation.checks import ABC2MIDI_CHECK, HEADLINE_CHECKS
from musicgen.files import atomic_write_bytes, atomic_write_text
from musicgen.runs.metrics import write_loss_plot

PIANO_ROLL_TUNES = 3
SCORE_TUNES = 3  # valid generated tunes shown as sheet music
DURATION_LABELS = 10  # commonest note lengths shown in the histogram
FORM_PLOTS = (
    ("final_degree", "Final note's scale degree", "form_final_degree.png"),
    ("sections_per_tune", "Sections per tune", "form_sections.png"),
    ("bars_per_section", "Bars per section", "form_section_bars.png"),
    ("length_bars", "Tune length in bars", "form_length.png"),
)
FORM_LABEL_SHARE = 0.005  # labels rarer than this on both sides are left off a form histogram


def _figure(width: float = 7, height: float = 3.5):
    from matplotlib.figure import Figure  # Agg canvas, without pyplot's global state

    return Figure(figsize=(width, height), dpi=100)


def _save(figure, path: Path) -> None:
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())


def plot_histograms(
    distribution: dict, labels: list[str], title: str, path: Path, ylabel: str = "share of notes"
) -> None:
    """Generated and corpus shares side by side for `labels`."""
    figure = _figure()
    axes = figure.add_subplot()
    positions = range(len(labels))
    for offset, side in ((-0.2, "corpus"), (0.2, "generated")):
        heights = [distribution[side].get(label, 0.0) for label in labels]
        axes.bar([p + offset for p in positions], heights, width=0.4, label=side)
    axes.set_xticks(list(positions), labels)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.legend()
    _save(figure, path)


def plot_piano_roll(texts: list[str], path: Path) -> int:
    """Notes against time for up to PIANO_ROLL_TUNES tunes that render; returns how many."""
    from musicgen.errors import RenderError
    from musicgen.music.render import abc_to_performance

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
    if metrics_path is not None and metrics_path.is_file():
        write_loss_plot(metrics_path, out / "loss.png")  # the plot `train` draws
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
    images += plot_form(result.get("form"), out)
    valid = [t["abc"] for t in result["tunes"] if t["valid"]]
    if plot_piano_roll(valid, out / "piano_roll.png"):
        images.append(("Piano roll of the first valid generated tunes", "piano_roll.png"))
    scores = write_scores(valid, out)
    page = out / "report.md"
    atomic_write_text(page, markdown(result, images, scores))
    return page


def write_scores(texts: list[str], out: Path) -> list[tuple[str, str]]:
    """Writes `score-1.svg`... for the first SCORE_TUNES of `texts` that engrave.

    Returns:
        (title, file name) of each score written.
    """
    from musicgen.music.abc import header_fields
    from musicgen.music.score import engrave

    candidates = texts[: 2 * SCORE_TUNES]  # a few spare, should one not engrave
    scores = []
    for text, sheet in zip(candidates, engrave(candidates)):
        if sheet.svg is None:
            continue
        name = f"score-{len(scores) + 1}.svg"
        atomic_write_text(out / name, sheet.svg)
        scores.append((header_fields(text).get("T", "").strip() or "(untitled)", name))
        if len(scores) == SCORE_TUNES:
            break
    return scores


def plot_form(form: dict | None, out: Path) -> list[tuple[str, str]]:
    """The form histograms, generated vs corpus; returns their (caption, file name)."""
    images = []
    for name, title, file_name in FORM_PLOTS if form else ():
        compared = form["distributions"][name]
        labels = [
            label
            for label in {**compared["corpus"], **compared["generated"]}
            if max(compared["corpus"].get(label, 0), compared["generated"].get(label, 0))
            >= FORM_LABEL_SHARE
        ]
        if name != "final_degree":
            labels.sort(key=lambda label: int(label.split("-")[0].rstrip("+")))
        unit = "sections" if name == "bars_per_section" else "tunes"
        plot_histograms(compared, labels, title, out / file_name, ylabel=f"share of {unit}")
        images.append((f"{title}, generated vs corpus", file_name))
    return images


def markdown(
    result: dict, images: list[tuple[str, str]], scores: list[tuple[str, str]] = ()
) -> str:
    """The page's text; `scores` are (title, file name) of sheet music shown after the plots."""
    lines = [f"# Evaluation of {result.get('run_dir', 'a model')}", ""]
    lines += summary_lines(result)
    lines += ["", "## Validity", "", *validity_table(result), ""]
    lines += ["## Musical statistics (generated vs training corpus)", ""]
    lines += statistics_table(result) + [""]
    if result.get("form"):
        lines += ["## Form (generated vs training corpus)", "", *form_table(result), ""]
    for caption, name in images:
        lines += [f"![{caption}]({name})", ""]
    lines += score_lines(scores)
    return "\n".join(lines)


def score_lines(scores: list[tuple[str, str]]) -> list[str]:
    """Markdown: a heading, then each (title, file name) score as a titled image."""
    lines = ["## Sheet music of the first valid generated tunes", ""] if scores else []
    for title, name in scores:
        # A generated title is text, never Markdown: brackets and the like would break the link.
        plain = "".join(c if c.isalnum() or c in " ,.'-" else " " for c in title).strip()
        plain = plain or "(untitled)"
        lines += [f"### {plain}", "", f"![Score of {plain}]({name})", ""]
    return lines


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
        if likelihood.get("as_written_bits_per_char") is not None:
            lines.append(
                "the model reads tunes at root C; in their own keys (root drawn from the "
                f"training tunes' keys): {likelihood['as_written_bits_per_char']:.3f} bits per "
                "character"
            )
    generated = result["validity"]["generated"]
    real = result["validity"]["real"]
    lines.append(
        f"valid (every headline check): {generated['valid']} of {generated['tunes']} generated "
        f"tunes ({_percent(generated['valid_share'])}); real tunes {_percent(real['valid_share'])}"
    )
    form = result.get("form")
    if form:
        figures = form["figures"]
        sections = form["distributions"]["sections_per_tune"]["total_variation"]
        bars = form["distributions"]["bars_per_section"]["total_variation"]
        lines.append(
            f"ending on the tonic: {_percent(figures['tonic_ending_share']['generated'])} of "
            f"generated tunes (real {_percent(figures['tonic_ending_share']['corpus'])}); "
            f"sections per tune {_number(figures['mean_sections']['generated'])} (real "
            f"{_number(figures['mean_sections']['corpus'])}, total variation {_number(sections)}); "
            f"bars per section total variation {_number(bars)}; length "
            f"{_number(figures['mean_length_bars']['generated'])} bars (real "
            f"{_number(figures['mean_length_bars']['corpus'])})"
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


def form_table(result: dict) -> list[str]:
    """Markdown rows: the form figures side by side with their distance, then each distribution's
    distances (see `musicgen.evaluation.form` for what is counted)."""
    form = result["form"]
    rows = ["| figure | generated | corpus | distance |", "|---|---|---|---|"]
    for name, entry in form["figures"].items():
        if "difference" in entry:
            difference = entry["difference"]
            distance = "n/a" if difference is None else f"{100 * difference:+.1f} points"
        elif "relative_difference" in entry:
            relative = entry["relative_difference"]
            distance = "n/a" if relative is None else f"{100 * relative:+.1f}%"
        else:
            distance = ""
        rows.append(
            f"| {name} | {_number(entry['generated'])} | {_number(entry['corpus'])} | {distance} |"
        )
    rows += ["", "| distribution | total variation | Jensen-Shannon (bits) |", "|---|---|---|"]
    for name, compared in form["distributions"].items():
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
