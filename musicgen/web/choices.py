"""The models a server offers, chosen on the page by id (never by a path the page sends)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from musicgen.errors import MusicgenError
from musicgen.runs.rundir import runs_under


@dataclass(frozen=True)
class ModelChoice:
    """One model the page can pick.

    Attributes:
        id: what the page sends back; only ids of this list are accepted.
        label: what the page shows.
        run_dir: the run directory the model is loaded from.
    """

    id: str
    label: str
    run_dir: Path


def bundled_models() -> list[ModelChoice]:
    """The models shipped with musicgen (`musicgen.runs.bundled`), the default one first; offered
    before the user's runs."""
    from musicgen.runs.bundled import bundled_names, default_name, find_bundled

    first = default_name()
    return [
        ModelChoice(id=f"bundled:{name}", label=f"{name} (bundled)", run_dir=find_bundled(name))
        for name in sorted(bundled_names(), key=lambda name: name != first)
    ]


def model_choices(
    run_dir: Path | None, checkpoints: Path = Path("checkpoints")
) -> list[ModelChoice]:
    """The models to offer: the bundled ones, `run_dir`, then the runs under `checkpoints`.

    The first is the default: `run_dir` when given, else a bundled model, else the newest run.

    Raises:
        MusicgenError: `run_dir` is not a trained run, or there is no model at all.
    """
    choices = bundled_models()
    runs: list[Path] = []
    if run_dir is not None:
        if not (Path(run_dir) / "config.json").is_file():
            raise MusicgenError(f"{run_dir}: not a trained run (no config.json); pass a run dir")
        # A bundled model asked for by name comes first, under its own id.
        choices.sort(key=lambda choice: not _same(choice.run_dir, Path(run_dir)))
        if not (choices and _same(choices[0].run_dir, Path(run_dir))):
            runs.append(Path(run_dir))
    runs += [p for p in runs_under(Path(checkpoints)) if not any(_same(p, r) for r in runs)]
    run_choices = _named(runs, taken={c.id for c in choices})
    run_first = run_dir is not None and runs[:1] == [Path(run_dir)]
    choices = run_choices[:1] + choices + run_choices[1:] if run_first else choices + run_choices
    if not choices:
        raise MusicgenError(
            f"no trained run under {checkpoints}/; run `musicgen train` first or pass --run-dir"
        )
    return choices


def _same(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def _named(runs: list[Path], taken: set[str]) -> list[ModelChoice]:
    choices = []
    for run in runs:
        base = f"run:{run.resolve().name}"
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}-{n}"
        taken.add(name)
        choices.append(ModelChoice(id=name, label=f"{run.resolve().name} ({run})", run_dir=run))
    return choices
