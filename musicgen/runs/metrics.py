"""A run's figures over time: `metrics.jsonl`, the TensorBoard event files and `loss.png`.

`metrics.jsonl` holds one JSON object per line, written every METRICS_EVERY steps and at each
validation: step, loss (nats) and bits_per_char, chars_per_sec, lr, elapsed, and at a validation
val_bits_per_char, best_step, best_val_bits_per_char (and valid_share, valid_seconds when tunes
are sampled; stopped and stop_reason when --patience ends the run).

No TensorFlow at import: `report` and `card` read and draw a run's figures without it; only the
TensorBoard writer imports it, when a run opens it.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from musicgen.files import atomic_write_bytes, atomic_write_text

METRICS_EVERY = 10  # steps between records in metrics.jsonl and TensorBoard
TENSORBOARD_TAGS = {
    "bits_per_char": "train/bits_per_char",
    "val_bits_per_char": "validation/bits_per_char",
    "chars_per_sec": "speed/chars_per_sec",
    "lr": "train/learning_rate",
    "valid_share": "validation/valid_share",
}


def read_metrics(path: Path) -> list[dict]:
    """The entries of a metrics.jsonl file, skipping a torn last line; [] if there is no file."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    entries = []
    for line in lines:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


class MetricsLog:
    """A run's metrics.jsonl and TensorBoard event files, written as it trains."""

    def __init__(self, metrics_path: Path, tensorboard_dir: Path):
        self.path = metrics_path
        self.tensorboard_dir = tensorboard_dir
        self.elapsed_before = 0.0  # seconds spent by earlier calls on this run
        self.handle = None
        self.tensorboard: _TensorBoard | None = None

    def start(self, after_step: int) -> dict:
        """Drops lines past `after_step` (logged after the checkpoint we resume from).

        Returns:
            The latest figures recorded up to `after_step`.
        """
        entries = read_metrics(self.path)
        kept = [entry for entry in entries if entry.get("step", 0) <= after_step]
        if len(kept) != len(entries):
            atomic_write_text(self.path, "".join(json.dumps(e) + "\n" for e in kept))
        latest: dict = {}
        for entry in kept:
            latest.update(entry)
        self.elapsed_before = float(latest.get("elapsed", 0.0))
        return latest

    def open_writers(self) -> None:
        """Opens metrics.jsonl for appending and the TensorBoard writer (importing TensorFlow)."""
        self.handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close)
        self.tensorboard = _TensorBoard(self.tensorboard_dir)

    def write(self, entry: dict) -> None:
        """Appends `entry` to metrics.jsonl and its scalars to TensorBoard, flushing both."""
        try:
            self.handle.write(json.dumps(entry) + "\n")
            self.handle.flush()
        except OSError as exc:  # a full disk: say which file could not grow
            raise OSError(exc.errno, exc.strerror, str(self.path)) from exc
        self.tensorboard.write(entry)

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None


class _TensorBoard:
    """The TENSORBOARD_TAGS scalars of each entry, in TensorBoard's event files."""

    def __init__(self, folder: Path):
        from musicgen.tfsetup import import_tensorflow

        self.tf = import_tensorflow()
        from tensorflow.core.framework.summary_pb2 import SummaryMetadata

        # Marks a summary as a scalar for TensorBoard's "scalars" dashboard.
        self.metadata = SummaryMetadata(
            plugin_data=SummaryMetadata.PluginData(plugin_name="scalars")
        ).SerializeToString()
        self.writer = self.tf.summary.create_file_writer(str(folder))

    def write(self, entry: dict) -> None:
        tf = self.tf
        with self.writer.as_default(step=entry["step"]):
            for key, tag in TENSORBOARD_TAGS.items():
                if key in entry:
                    # What tensorboard's own scalar() writes, without needing the tensorboard
                    # package (TensorFlow 2.21 no longer installs it).
                    value = tf.constant(entry[key], tf.float32)
                    tf.summary.write(tag, value, metadata=self.metadata)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def write_loss_plot(metrics_path: Path, plot_path: Path) -> None:
    """Draws training and validation bits per character against step into a PNG."""
    from matplotlib.figure import Figure  # the Agg canvas, without pyplot's global state

    entries = read_metrics(metrics_path)
    figure = Figure(figsize=(7, 4), dpi=100)
    axes = figure.add_subplot()
    for key, label in (("bits_per_char", "training"), ("val_bits_per_char", "validation")):
        points = [(e["step"], e[key]) for e in entries if key in e]
        if points:
            steps, values = zip(*points)
            axes.plot(steps, values, marker="o" if len(points) < 30 else None, label=label)
    axes.set_xlabel("step")
    axes.set_ylabel("bits per character")
    axes.grid(alpha=0.3)
    if entries:
        axes.legend(loc="upper center")
    _draw_validity(axes, entries)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    atomic_write_bytes(plot_path, buffer.getvalue())


def _draw_validity(axes, entries: list[dict]) -> None:
    """Adds the share of valid sampled tunes (right axis, 0-100%) and the best validation step
    (a dotted line) to the bits-per-character axes; nothing if no entry has them."""
    points = [(e["step"], 100 * e["valid_share"]) for e in entries if "valid_share" in e]
    best = [e["best_step"] for e in entries if e.get("best_step") is not None]
    if best:
        axes.axvline(best[-1], color="grey", linestyle=":", label=f"best (step {best[-1]})")
        axes.legend(loc="upper center")
    if not points:
        return
    right = axes.twinx()
    steps, shares = zip(*points)
    right.plot(steps, shares, color="tab:green", marker="." if len(points) < 30 else None,
               label="valid sampled tunes")  # fmt: skip
    right.set_ylim(-2, 102)
    right.set_ylabel("valid sampled tunes (%)")
    right.legend(loc="center right")


def duration(seconds: float) -> str:
    """`42s`, `3m05s`, `1h07m`: how the progress line and the card write a length of time."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"
