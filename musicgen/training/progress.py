"""What a person watching a run sees, and the clock behind it: the progress line on stderr and
the training time that throughput and time left are measured in. No TensorFlow here.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import time

from musicgen.runs.metrics import METRICS_EVERY, duration

MIN_PROGRESS_LINES = 50  # without a terminal, about this many progress lines per run (plus evals)


class Timing:
    """Wall-clock accounting for throughput and time left.

    The training clock starts after the first step of a call (which includes tracing) and stops
    inside `aside()` blocks (evaluating, recording, checkpointing, `train`'s on_step).
    """

    def __init__(self, chars_per_step: int):
        self.chars_per_step = chars_per_step
        self.began: float | None = None  # when the first step of this call finished
        self.began_step = 0
        self.ended: float | None = None
        self.set_aside = 0.0  # seconds spent in finished `aside()` blocks since `began`
        self.aside_began: float | None = None  # inside an `aside()` block since then
        self.mark = (0.0, 0)  # (training seconds, step) at the previous interval_rate()

    def start(self, step: int) -> None:
        """Called once the first step's result has been read, i.e. the step has finished."""
        self.began = time.monotonic()
        self.began_step = step
        self.mark = (0.0, step)

    def stop(self) -> None:
        self.ended = time.monotonic()

    @contextlib.contextmanager
    def aside(self):
        """Time spent inside this block does not count as training time."""
        self.aside_began = time.monotonic()
        try:
            yield
        finally:
            if self.began is not None:
                self.set_aside += time.monotonic() - max(self.aside_began, self.began)
            self.aside_began = None

    def training_seconds(self) -> float:
        """Seconds of training since `start`, at this moment."""
        if self.began is None:
            return 0.0
        now = self.ended or time.monotonic()
        current_aside = 0.0 if self.aside_began is None else now - max(self.aside_began, self.began)
        return now - self.began - self.set_aside - current_aside

    def interval_rate(self, step: int) -> float | None:
        """Training characters per second since the previous call, None before `start`."""
        if self.began is None:
            return None
        seconds = self.training_seconds()
        then_seconds, then_step = self.mark
        self.mark = (seconds, step)
        return self._rate(step - then_step, seconds - then_seconds)

    def overall_rate(self, step: int) -> float | None:
        """Training characters per second over this call, None if it ran fewer than two steps."""
        return self._rate(step - self.began_step, self.training_seconds())

    def seconds_left(self, step: int, total: int) -> float | None:
        """Wall time (evaluation and checkpoints included) the remaining steps should take."""
        if self.began is None or step <= self.began_step:
            return None
        per_step = (time.monotonic() - self.began) / (step - self.began_step)
        return per_step * (total - step)

    def _rate(self, steps: int, seconds: float) -> float | None:
        return steps * self.chars_per_step / seconds if steps > 0 and seconds > 0 else None


class Progress:
    """A progress line on stderr: redrawn in place on a terminal, printed now and then otherwise."""

    def __init__(self, total: int, *, enabled: bool, stream=None):
        self.total = total
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.every = max(METRICS_EVERY, total // MIN_PROGRESS_LINES)
        self.last_draw = 0.0
        self.shown = False

    def update(self, step: int, figures: dict, seconds_left: float | None) -> None:
        """Shows `step` with the latest `figures` (metrics.jsonl's fields) and the time left."""
        if not self.enabled:
            return
        line = self._line(step, figures, seconds_left)
        if self.tty:
            now = time.monotonic()
            if now - self.last_draw >= 0.1 or step == self.total:
                width = shutil.get_terminal_size((100, 20)).columns - 1
                bar_width = 20
                if len(line) + bar_width + 3 <= width:
                    filled = bar_width * step // max(self.total, 1)
                    line = f"[{'#' * filled}{'.' * (bar_width - filled)}] {line}"
                self.stream.write("\r" + line[:width].ljust(width))
                self.stream.flush()
                self.last_draw, self.shown = now, True
        elif step % self.every == 0 or step == self.total:
            self.stream.write(line + "\n")
            self.stream.flush()

    def note(self, message: str) -> None:
        """A line that stays: printed above the redrawn progress line."""
        if not self.enabled:
            return
        self.clear()
        self.stream.write(message + "\n")
        self.stream.flush()

    def clear(self) -> None:
        if self.tty and self.shown:
            width = shutil.get_terminal_size((100, 20)).columns - 1
            self.stream.write("\r" + " " * width + "\r")
            self.shown = False

    def close(self) -> None:
        if self.tty and self.shown:
            self.stream.write("\n")
            self.stream.flush()
            self.shown = False

    def _line(self, step: int, figures: dict, seconds_left: float | None) -> str:
        # Most important first: a narrow terminal cuts the end off.
        parts = [f"step {step}/{self.total}"]
        bits = figures.get("bits_per_char")
        validation = figures.get("val_bits_per_char")
        if bits is not None or validation is not None:
            text = "" if bits is None else f"{bits:.3f} bits/char"
            if validation is not None:
                text += f" (val {validation:.3f})" if text else f"val {validation:.3f} bits/char"
            parts.append(text)
        if "chars_per_sec" in figures:
            parts.append(f"{figures['chars_per_sec']:,.0f} chars/s")
        if seconds_left is not None:
            parts.append(f"{duration(seconds_left)} left")
        return " | ".join(parts)


def validation_line(entry: dict) -> str:
    """The line a validation leaves above the progress bar."""
    line = f"step {entry['step']}: validation {entry['val_bits_per_char']:.3f} bits/char"
    if "valid_share" in entry:
        line += f", {entry['valid_share']:.0%} of sampled tunes valid"
    if entry.get("best_step") == entry["step"]:
        line += " (best so far)"
    return line
