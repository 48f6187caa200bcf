"""CLI behaviour that needs no trained model: start-up cost, help, and clear errors."""

import subprocess
import sys

from cli_checks import one_line_error
from click.testing import CliRunner

from musicgen.cli import main


def test_import_and_help_do_not_load_tensorflow():
    code = (
        "import sys; from click.testing import CliRunner; from musicgen.cli import main; "
        "r = CliRunner().invoke(main, ['--help']); assert r.exit_code == 0, r.output; "
        "assert 'tensorflow' not in sys.modules and 'music21' not in sys.modules; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


def test_every_command_has_help():
    runner = CliRunner()
    expected = {"train", "generate", "render", "play", "ingest", "evaluate", "info", "serve"}
    assert set(main.commands) == expected
    for command in main.commands:
        result = runner.invoke(main, [command, "--help"])
        assert result.exit_code == 0, result.output
        assert "Usage: main " in result.output or "Usage: musicgen " in result.output


def test_missing_run_dir_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(main, ["generate", "--run-dir", str(tmp_path / "nope")])
    one_line_error(result, "nope")


def test_resume_without_run_dir(tmp_path):
    result = CliRunner().invoke(main, ["train", "--resume"])
    one_line_error(result, "--run-dir")


def test_missing_soundfont(tmp_path):
    result = CliRunner().invoke(main, ["render", str(tmp_path / "x.abc"), "--soundfont", "no.sf2"])
    one_line_error(result, "no.sf2")


def test_render_missing_file(tmp_path):
    result = CliRunner().invoke(main, ["render", str(tmp_path / "x.abc")])
    one_line_error(result, "x.abc")


def test_train_on_a_missing_path_or_empty_folder(tmp_path):
    result = CliRunner().invoke(main, ["train", "--data", str(tmp_path / "tunes.abc")])
    one_line_error(result, "tunes.abc")
    result = CliRunner().invoke(main, ["train", "--data", str(tmp_path)])
    one_line_error(result, str(tmp_path))
    assert not any(tmp_path.iterdir())  # nothing was written for a run that could not start
