"""The `musicgen` command line: each command parses options, builds configs, makes one library call.

TensorFlow is imported inside the commands that need it, so `musicgen --help` answers at once.
The options and the rule that turns them into configs are in `cli_options`. Over 400 lines: eight
commands, each with its options and its one-line error handling, read best side by side.
"""

from __future__ import annotations

import errno
import functools
import os
import signal
import sys
import time
from pathlib import Path

import click

from musicgen import __version__
from musicgen.cli_options import (
    OPTION_OF_FIELD,
    checkpoint_option,
    option_group,
    run_dir_option,
    sampling_options,
    train_config,
    train_options,
)
from musicgen.config import (
    MAX_TUNES_PER_CALL,
    SampleConfig,
)
from musicgen.errors import ConfigError, MusicgenError

DEFAULT_CHECKPOINTS = Path("checkpoints")
DEFAULT_OUT = Path("out")


def _fail(message: str, code: int = 1):
    click.echo(f"musicgen: error: {message}", err=True)
    sys.exit(code)


class Interrupted(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt; `signum` gives the exit code."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def file_options(no_audio_help: str):
    """The options `generate` and `render` share: what each tune is written as, and over what."""
    options = (
        click.option(
            "--soundfont",
            type=click.Path(path_type=Path, dir_okay=False),
            default=None,
            help="A General MIDI .sf2 for the WAV files. Default: the one pretty_midi ships.",
        ),
        click.option("--no-audio", is_flag=True, help=no_audio_help),
        click.option("--no-score", is_flag=True, help="Do not write the sheet music (.svg)."),
        click.option(
            "--force", is_flag=True,
            help="Overwrite files of the same name (default: add -2, -3...).",
        ),
    )  # fmt: skip
    return option_group(options)


def _raise_interrupted(signum, frame):
    raise Interrupted(signum)


def user_errors(command):
    """Turns a MusicgenError or a file-system error into one line on stderr and exit code 1.

    While the command runs, SIGTERM interrupts it as Ctrl-C does (exit code 143, not 130); `train`
    installs its own handlers, which finish the step and save first.
    """

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        previous = _set_sigterm(_raise_interrupted)
        try:
            return command(*args, **kwargs)
        except ConfigError as exc:
            _fail(_with_option_name(exc))
        except MusicgenError as exc:
            _fail(str(exc))
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                _fail(f"{where}{exc.strerror}; free some disk space or choose another folder")
            _fail(f"{where}{exc.strerror or exc}; check the path and its permissions")
        except KeyboardInterrupt as exc:
            # 128 + the signal's number, as a shell reports a process killed by it: 130 for
            # Ctrl-C (SIGINT), 143 for SIGTERM.
            _fail("interrupted", code=128 + getattr(exc, "signum", signal.SIGINT))
        finally:
            _set_sigterm(previous)

    return wrapper


def _set_sigterm(handler):
    """Installs `handler` for SIGTERM where that is possible (the main thread); returns the old."""
    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. a test runner's worker): leave it alone
        return None


def _with_option_name(exc: ConfigError) -> str:
    """The message with the setting's name as the user wrote it: `d_model` -> `--d-model`."""
    message = str(exc)
    option = OPTION_OF_FIELD.get(exc.field, "--" + exc.field.replace("_", "-"))
    if exc.field and message.startswith(exc.field):
        return option + message[len(exc.field) :]
    return message


class _Group(click.Group):
    """Click's group whose usage errors are one line on stderr, as every other error is."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as exc:
            hint = ""
            if isinstance(exc, click.UsageError) and exc.ctx is not None:
                hint = f" (see `{exc.ctx.command_path} --help`)"
            click.echo(f"musicgen: error: {exc.format_message()}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("musicgen: error: interrupted", err=True)
            sys.exit(130)
        if not standalone_mode:
            return result
        sys.exit(result if isinstance(result, int) and not isinstance(result, bool) else 0)


def run() -> None:
    """The `musicgen` program: `main`, and after an interrupt an exit without the interpreter's
    teardown, which takes over a second once TensorFlow is loaded (the line is already out, the
    partial files already removed)."""
    try:
        main()
    except SystemExit as exc:
        if exc.code in (128 + signal.SIGINT, 128 + signal.SIGTERM):
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(exc.code)
        raise


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="musicgen")
def main():
    """Learn folk music from ABC notation and write new tunes you can play."""
    # TensorFlow's C++ log lines (oneDNN fallbacks, CUDA probing) mean nothing to a user; Python
    # errors still surface. Set TF_CPP_MIN_LOG_LEVEL yourself to see them.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    _quiet_matplotlib()


def _quiet_matplotlib() -> None:
    """Gives Matplotlib a writable cache folder: with an unwritable HOME it warns in many lines."""
    if "MPLCONFIGDIR" in os.environ:
        return
    home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    probe = home if home.exists() else home.parent
    if not os.access(probe, os.W_OK):
        import tempfile

        os.environ["MPLCONFIGDIR"] = tempfile.mkdtemp(prefix="musicgen-matplotlib-")


def _latest_run(root: Path) -> Path:
    from musicgen.runs.rundir import runs_under

    runs = runs_under(root)
    if not runs:
        raise MusicgenError(
            f"no trained run under {root}/; run `musicgen train` first or pass --run-dir"
        )
    return runs[0]


def _model_dir(run_dir: Path | None, notes: list[str]) -> Path:
    """The model `--run-dir` names: a run directory, or a bundled model by name (an existing path
    of that name wins; `musicgen.runs.bundled.model_folder`). Without it, the newest run under
    checkpoints/, else the bundled model, which `notes` gets one line about."""
    from musicgen.runs.bundled import find_bundled, model_folder

    if run_dir is not None:
        return model_folder(run_dir)
    try:
        return _latest_run(DEFAULT_CHECKPOINTS)
    except MusicgenError:
        folder = find_bundled("bundled")
        if folder is None:
            raise
    notes.append(
        f"using the bundled model {folder.name} (no run under {DEFAULT_CHECKPOINTS}/; see "
        f"musicgen info {folder.name})"
    )
    return folder


@main.command()
@train_options
@user_errors
def train(data_paths, run_dir, resume, strategy, no_cache, init_from, **options):
    """Train a model on ABC or MIDI tunes (the bundled corpus unless --data is given)."""
    from musicgen.data.encoded import load_encoded_corpus
    from musicgen.runs.bundled import refuse_training_into
    from musicgen.runs.rundir import check_run_dir

    if resume and run_dir is None:
        raise MusicgenError("--resume needs --run-dir: the run to continue")
    if run_dir is None:
        run_dir = DEFAULT_CHECKPOINTS / time.strftime("run-%Y%m%d-%H%M%S")
    refuse_training_into(run_dir)
    check_run_dir(run_dir, resume=resume)
    parent = None
    if init_from is not None:
        from musicgen.training.finetune import find_parent

        parent = find_parent(init_from)
    config = train_config(run_dir, resume, data_paths, options, parent)
    corpus = load_encoded_corpus(
        list(config.data.paths) or None,
        fraction=config.data.validation_fraction,
        use_cache=not no_cache,
        log=lambda message: click.echo(message, err=True),
        transpose=config.data.transpose,
        common_root=config.data.common_root,
    )
    summary = corpus.report.summary()
    click.echo(summary, err=True)
    if corpus.from_cache:
        message = f"used the cached corpus {corpus.folder} (files unchanged; --no-cache re-reads)"
        click.echo(message, err=True)

    from musicgen.training.train import train as run_training

    result = run_training(
        config,
        corpus,
        run_dir,
        resume=resume,
        corpus_summary=summary,
        strategy=strategy,
    )
    if result.best_checkpoint is not None:
        click.echo(
            f"best validation: {result.best_val_bits_per_char:.3f} bits/char at step "
            f"{result.best_step}, kept in {Path(result.best_checkpoint).parent}/ (generate and "
            "evaluate load it)",
            err=True,
        )
    click.echo(f"run directory: {run_dir}", err=True)
    click.echo(f"next: musicgen generate --run-dir {run_dir} --num 4 --out {DEFAULT_OUT}", err=True)
    return result


def _say(message: str) -> None:
    click.echo(f"musicgen: {message}", err=True)


@main.command()
@run_dir_option
@click.option(
    "--seed",
    default=None,
    help=r"Priming ABC, e.g. 'X:1\nM:6/8\nK:D\n' (\n means newline), or an .abc file.",
)
@click.option("--key", default=None, help="Key of the tunes (K:), e.g. D, Ador, Em.")
@click.option("--meter", default=None, help="Meter of the tunes (M:), e.g. 6/8, 4/4, C|.")
@click.option(
    "--type", "tune_type", default=None, help="Tune type (R:), e.g. reel, jig, hornpipe, air."
)
@click.option("--title", default=None, help="Title of the tunes (T:).")
@click.option(
    "--num",
    type=click.IntRange(1, MAX_TUNES_PER_CALL),
    default=SampleConfig.num,
    show_default=True,
    help="How many tunes, sampled as one batch.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=DEFAULT_OUT,
    show_default=True,
    help="Folder for the .abc, .mid, .wav and .svg files.",
)
@sampling_options
@file_options("Write .abc and .mid only.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON record per tune.")
@click.option(
    "--attention",
    "attention_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Transformer runs: write heat maps of the first tune's attention, one PNG per layer and "
    "head, into this folder.",
)
@checkpoint_option
@user_errors
def generate(run_dir, seed, out, soundfont, no_audio, as_json, attention_dir, force, no_score,
             key, meter, tune_type, title, which_checkpoint, **options):  # fmt: skip
    """Write new tunes with a trained model, as ABC, MIDI, WAV and sheet music (SVG).

    --key, --meter, --type and --title build the header the tunes start with; each value must be
    one the model's training tunes used.
    """
    from musicgen.generation.generate import parse_seed
    from musicgen.generation.output import check_output_folder

    sample = SampleConfig(**options)
    _check_soundfont(soundfont, no_audio)
    seed_text = parse_seed(seed)
    # Which model and step were loaded is said once the tunes are written, so an error stays the
    # one line on stderr: the bundled model taken by default, else the checkpoint's step.
    notes: list[str] = []
    loaded: list[str] = []
    run_dir = _model_dir(run_dir, notes)
    check_output_folder(out, create=False)  # before sampling: a bad --out is said at once
    if any(value is not None for value in (key, meter, tune_type, title)):
        from musicgen.data.controls import build_seed, known_headers

        seed_text = build_seed(
            key=key, meter=meter, tune_type=tune_type, title=title, seed_text=seed_text,
            known=known_headers(run_dir),
        )  # fmt: skip

    from musicgen.generation.generate import Generator, generate_at_home
    from musicgen.runs.checkpoint import load_for_inference

    # A damaged checkpoint: one warning line, then the previous one is used.
    model, vocab, config = load_for_inference(
        run_dir, warn=_say, checkpoint=which_checkpoint, loaded=loaded.append
    )
    if attention_dir is not None:
        from musicgen.generation.attention import require_attention

        require_attention(model)
    started = time.perf_counter()
    texts = generate_at_home(Generator(model, vocab), seed_text, sample, config, run_dir)
    elapsed = time.perf_counter() - started
    records = _report_tunes(
        texts, out, soundfont, no_audio, as_json, elapsed, force, score=not no_score
    )
    if attention_dir is not None:
        _write_attention(model, vocab, records[0], attention_dir)
    for line in notes or loaded:
        _say(line)


def _write_attention(model, vocab, record, attention_dir: Path) -> None:
    from musicgen.generation.attention import write_attention_maps

    text = Path(record.abc).read_text(encoding="utf-8")
    summaries = write_attention_maps(model, vocab, text, attention_dir, Path(record.abc).stem)
    farthest = max(summaries, key=lambda s: s.mean_distance)
    click.echo(
        f"attention maps of {record.abc}: {len(summaries)} PNGs in {attention_dir}/ (layer "
        f"{farthest.layer} head {farthest.head} looks farthest back, "
        f"{farthest.mean_distance:.1f} characters on average)",
        err=True,
    )


def _check_soundfont(soundfont: Path | None, no_audio: bool = False) -> None:
    if soundfont is not None and not no_audio:
        from musicgen.music.audio import check_soundfont

        check_soundfont(soundfont)


def _report_tunes(texts, out, soundfont, no_audio, as_json, elapsed, force=False, score=True):
    from musicgen.generation.output import format_table, records_json, write_tunes

    records, notices = write_tunes(
        texts, out, soundfont=soundfont, audio=not no_audio, force=force, score=score
    )
    for notice in notices:
        click.echo(f"musicgen: {notice}", err=True)
    if as_json:
        click.echo(records_json(records))
        return records
    chars = sum(r.characters for r in records)
    click.echo(format_table(records))
    click.echo(f"sampled {chars} characters in {elapsed:.1f} s; files in {out}/")
    return records


@main.command()
@click.argument("abc_file", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder for the .mid and .wav files. Default: beside the ABC file.",
)
@file_options("Write .mid only.")
@click.option(
    "--transpose",
    type=click.IntRange(-48, 48),
    default=0,
    metavar="N",
    help="Move every tune N semitones (negative: down) first; files are named ...-upN / -downN.",
)
@user_errors
def render(abc_file, out, soundfont, no_audio, force, no_score, transpose):
    """Turn the tunes of an ABC file into MIDI, WAV and sheet music (SVG) files beside it."""
    from musicgen.generation.output import render_abc_file

    _check_soundfont(soundfont)
    records, notices = render_abc_file(
        abc_file,
        out,
        soundfont=soundfont,
        audio=not no_audio,
        force=force,
        score=not no_score,
        transpose=transpose,
    )
    for notice in notices:
        click.echo(f"musicgen: {notice}", err=True)
    for record in records:
        written = ", ".join(p for p in (record.midi, record.wav, record.svg) if p)
        status = written if record.valid else f"not rendered: {record.reason}"
        if record.score_reason:
            status += f" (no score: {record.score_reason})"
        click.echo(f"{record.title or '(untitled)'}: {status}")
    if not any(r.valid for r in records):
        first = records[0].reason if records else "no tunes"
        raise MusicgenError(f"{abc_file}: no tune could be rendered (first: {first})")


@main.command()
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False))
@user_errors
def play(path):
    """Play a WAV or MIDI file through a player found on this machine."""
    from musicgen.music.audio import play as play_file

    message = play_file(path)
    if message:
        click.echo(message)


@main.command()
@click.argument(
    "paths", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="FILES_OR_FOLDERS..."
)
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="The ABC tunebook to write.",
)
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
@click.option(
    "--grid",
    type=click.Choice(["8", "16", "32"]),
    default="16",
    show_default=True,
    help="Shortest note MIDI onsets snap to (eighths, sixteenths, 32nds); triplets are kept.",
)
@user_errors
def ingest(paths, out, force, grid):
    """Convert MIDI files (and ABC tunebooks) into one ABC tunebook, saying what was skipped."""
    from musicgen.data.corpus import load_corpus, tunebook_text
    from musicgen.files import atomic_write_text, write_new_text

    if out.exists() and not force:
        raise MusicgenError(f"{out}: already exists; pass --force to overwrite it")
    if out.exists() and not out.is_file():
        raise MusicgenError(f"{out}: not a regular file; --out must name a file (or a new one)")
    if not out.parent.is_dir():
        raise MusicgenError(f"{out.parent}: no such folder for --out; create it first")
    tunes, report = load_corpus(paths, grid=int(grid) // 4)
    for error in report.file_errors():
        click.echo(f"musicgen: skipped {error}", err=True)
    plural = "" if report.midi_files == 1 else "s"
    click.echo(f"converted {report.midi_files} MIDI file{plural}", err=True)
    click.echo(report.summary(), err=True)
    try:
        (atomic_write_text if force else write_new_text)(out, tunebook_text(tunes))
    except FileExistsError:
        raise MusicgenError(f"{out}: created meanwhile by another program; kept it") from None
    click.echo(f"wrote {len(tunes)} tunes to {out}")


@main.command()
@run_dir_option
@click.option(
    "--data",
    "data_paths",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Tunes to score (.abc file or folder, repeatable). Default: the run's validation tunes.",
)
@click.option("--num", type=click.IntRange(1, MAX_TUNES_PER_CALL), default=100, show_default=True,
              help="Tunes to generate and check.")  # fmt: skip
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder for evaluation.json, report.md and plots. Default: out/evaluate-RUN.",
)
@sampling_options
@click.option("--json", "as_json", is_flag=True, help="Print the whole result as JSON.")
@checkpoint_option
@user_errors
def evaluate(run_dir, data_paths, out, as_json, which_checkpoint, **options):
    """Measure a trained model: likelihood, validity, musical statistics, novelty."""
    import json

    from musicgen.generation.output import check_output_folder

    sample = SampleConfig(**options)
    notes: list[str] = []  # said at the end, so an error stays the one line on stderr
    loaded: list[str] = []
    run_dir = _model_dir(run_dir, notes)
    out = out or DEFAULT_OUT / f"evaluate-{Path(run_dir).resolve().name}"
    check_output_folder(out, create=False)

    from musicgen.evaluation.evaluate import evaluate_run
    from musicgen.evaluation.report import summary_lines, validity_table, write_report
    from musicgen.files import atomic_write_text

    result = evaluate_run(
        run_dir, sample, data_paths, checkpoint=which_checkpoint, loaded=loaded.append
    )
    page = write_report(result, out, Path(run_dir) / "metrics.jsonl")
    result["report"] = str(page)
    atomic_write_text(out / "evaluation.json", json.dumps(result, indent=1) + "\n")
    _record_on_card(run_dir, result, out / "evaluation.json")
    for line in notes or loaded:
        _say(line)
    if as_json:
        click.echo(json.dumps(result, indent=1))
        return
    for line in [*summary_lines(result), "", *validity_table(result), ""]:
        click.echo(line)
    click.echo(f"report: {page}; JSON: {out / 'evaluation.json'}")


def _record_on_card(run_dir: Path, result: dict, source: Path) -> None:
    """Puts the evaluation's figures on the run's card.json; a run folder that cannot be written
    (read-only, someone else's) is said in one line, the evaluation itself is kept. A bundled
    model's card is part of the installed package and stays as shipped."""
    from musicgen.runs.bundled import is_bundled_folder
    from musicgen.runs.card import record_evaluation

    if is_bundled_folder(run_dir):
        name = Path(run_dir).name
        _say(f"the bundled model's card stays as shipped; musicgen info {name} --evaluation "
             f"{source} shows this evaluation")  # fmt: skip
        return
    try:
        record_evaluation(run_dir, result, source)
    except (OSError, MusicgenError) as exc:
        _say(f"warning: could not update {Path(run_dir) / 'card.json'}: {exc}")


@main.command()
@click.argument("run_dir", required=False, type=click.Path(path_type=Path))
@click.option(
    "--evaluation",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="An evaluate result (evaluation.json) to show. Default: the one the run's card.json "
    "records, else out/evaluate-RUN/evaluation.json.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the card as JSON.")
@user_errors
def info(run_dir, evaluation, as_json):
    """Say what a model is: family, size, data, training, validation and evaluate figures.

    RUN_DIR defaults to the newest run under checkpoints/, else the bundled model; a bundled
    model's name (`bundled`: the default one) shows its card.
    """
    import json

    from musicgen.runs.card import build_card, format_card

    notes: list[str] = []
    card = build_card(_model_dir(run_dir, notes), evaluation)
    if as_json:
        click.echo(json.dumps(card, indent=1))
    else:
        for line in format_card(card):
            click.echo(line)
    for line in notes:
        _say(line)


@main.command()
@click.option(
    "--run-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="The default model's run, or a bundled model's name. Default: the bundled model, else "
    "the newest run under checkpoints/ (every run there is offered on the page).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Anything but 127.0.0.1 lets other machines use the page.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8000,
    show_default=True,
    help="Port to listen on (0: any free port, printed).",
)
@user_errors
def serve(run_dir, host, port):
    """Serve a local web page to generate, see, hear and download tunes (Ctrl-C stops)."""
    from musicgen.runs.bundled import model_folder
    from musicgen.web.serve import serve as run_server

    run_dir = None if run_dir is None else model_folder(run_dir)
    run_server(run_dir, host=host, port=port, checkpoints=DEFAULT_CHECKPOINTS)
