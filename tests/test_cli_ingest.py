"""`musicgen ingest` and `musicgen train --data` with MIDI files, through click's CliRunner."""

from __future__ import annotations

from pathlib import Path

import midi_samples  # noqa: E402
import pytest
from cli_checks import one_line_error
from click.testing import CliRunner

from musicgen.cli import main
from musicgen.data.corpus import load_corpus
from musicgen.music.abc import split_tunebook
from musicgen.music.render import abc_to_midi, abc_to_performance


@pytest.fixture(scope="module")
def real_tunes():
    return load_corpus()[0][20::600]


def _midi_folder(folder: Path, tunes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index, tune in enumerate(tunes):
        abc_to_midi(tune.text, folder / f"tune{index}.mid")
    return folder


def test_ingest_writes_a_tunebook_and_reports_skipped_files(tmp_path, real_tunes):
    folder = _midi_folder(tmp_path / "in" / "nested", real_tunes)
    midi_samples.bad_midi(folder, "truncated")
    midi_samples.bad_midi(folder, "drums-only")
    (tmp_path / "in" / "extra.abc").write_text("X:9\nT:Extra\nK:G\nGABc dedB|\n")
    out = tmp_path / "tunes.abc"
    result = CliRunner().invoke(main, ["ingest", str(tmp_path / "in"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    stderr = result.stderr.splitlines()
    assert sum(line.startswith("musicgen: skipped ") for line in stderr) == 2
    assert any("truncated.mid: MIDI file is truncated" in line for line in stderr)
    assert any("drums-only.mid: only drum notes" in line for line in stderr)
    assert f"converted {len(real_tunes)} MIDI files" in stderr
    assert stderr[-1] == "skipped 2 files (midi-drums-only 1, midi-truncated 1)"
    assert result.stdout.strip() == f"wrote {len(real_tunes) + 1} tunes to {out}"
    tunes, errors = split_tunebook(out.read_text(encoding="utf-8"), str(out))
    assert not errors and len(tunes) == len(real_tunes) + 1
    numbers = [t.source.rsplit("#", 1)[1] for t in tunes]
    assert numbers == [f"X:{n}" for n in range(1, len(tunes) + 1)]
    assert all(abc_to_performance(t.text).notes for t in tunes)
    assert not list(tmp_path.glob(".tunes.abc*"))  # no temporary file left by the atomic write


def test_ingest_refuses_to_overwrite_without_force(tmp_path, real_tunes):
    folder = _midi_folder(tmp_path / "in", real_tunes[:2])
    out = tmp_path / "tunes.abc"
    out.write_text("keep me\n")
    result = CliRunner().invoke(main, ["ingest", str(folder), "--out", str(out)])
    one_line_error(result, "tunes.abc: already exists", "--force")
    assert out.read_text() == "keep me\n"
    result = CliRunner().invoke(main, ["ingest", str(folder), "--out", str(out), "--force"])
    assert result.exit_code == 0, result.output
    assert out.read_text().count("\nX:") == 2 and out.read_text().startswith("% source: ")


def test_ingest_grid_option(tmp_path):
    quick = midi_samples.scale_notes([60, 62, 64, 65, 67, 69, 71, 72], 0.125)
    path = midi_samples.melody_file(tmp_path / "quick.mid", quick)
    out = tmp_path / "out.abc"
    result = CliRunner().invoke(main, ["ingest", str(path), "--out", str(out), "--grid", "32"])
    assert result.exit_code == 0, result.output
    assert "C/4D/4E/4F/4G/4A/4B/4c/4|]" in out.read_text()
    result = CliRunner().invoke(main, ["ingest", str(path), "--out", str(out), "--grid", "7"])
    assert result.exit_code == 2 and "--grid" in result.output


@pytest.mark.parametrize("kind", midi_samples.BAD_KINDS)
def test_ingest_of_a_single_bad_file_is_a_clear_error(tmp_path, kind):
    path = midi_samples.bad_midi(tmp_path, kind)
    out = tmp_path / "out.abc"
    result = CliRunner().invoke(main, ["ingest", str(path), "--out", str(out)])
    line = one_line_error(result, str(path))
    assert line.count(";") >= 1  # what is wrong; what to do
    assert not out.exists()


@pytest.mark.parametrize("kind", midi_samples.BAD_KINDS)
def test_train_on_a_single_bad_midi_file_is_a_clear_error(tmp_path, kind):
    path = midi_samples.bad_midi(tmp_path, kind)
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--data", str(path), "--run-dir", str(run_dir)])
    one_line_error(result, str(path), "no usable tune")
    assert not run_dir.exists()


def test_ingest_needs_inputs_and_an_existing_out_folder(tmp_path):
    result = CliRunner().invoke(main, ["ingest", "--out", str(tmp_path / "x.abc")])
    assert result.exit_code == 2
    path = midi_samples.melody_file(tmp_path / "a.mid", midi_samples.scale_notes([60, 62]))
    out = tmp_path / "no" / "x.abc"
    result = CliRunner().invoke(main, ["ingest", str(path), "--out", str(out)])
    one_line_error(result, "no such folder")
    result = CliRunner().invoke(main, ["ingest", str(tmp_path / "gone"), "--out", "x.abc"])
    one_line_error(result, "gone: no such file or folder")


def test_help_mentions_midi():
    runner = CliRunner()
    assert ".mid" in runner.invoke(main, ["train", "--help"]).output
    help_text = runner.invoke(main, ["ingest", "--help"]).output
    assert "--out" in help_text and "--force" in help_text and "--grid" in help_text
