"""Every command through click's CliRunner, as a user runs them: train a tiny model on real tunes,
resume it, generate tunes, render and play files; outputs read back with mido and pretty_midi."""

import json
import re
from pathlib import Path

import mido
import pretty_midi
import pytest
from cli_checks import train_tiny
from click.testing import CliRunner

from musicgen.cli import main
from musicgen.data.corpus import load_corpus
from musicgen.music.abc import read_text_file, split_tunebook

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_dir(oneills_file, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "tiny"
    result = train_tiny(oneills_file, run, 40)
    # The count train reports is the count the corpus reader keeps from that tunebook.
    tunes, _ = load_corpus([oneills_file])
    assert re.search(r"\bkept (\d+)\b", result.stderr).group(1) == str(len(tunes))
    return run


def test_train_writes_a_complete_run_directory(run_dir):
    for name in ("config.json", "vocab.json", "corpus.json", "metrics.jsonl", "loss.png"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "ckpt" / "checkpoint").is_file()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 40
    corpus = json.loads((run_dir / "corpus.json").read_text())
    assert "oneills1850" in json.dumps(corpus)


def test_resume_continues_to_the_new_step_target(run_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    result = CliRunner().invoke(
        main, ["train", "--run-dir", str(copy), "--resume", "--steps", "50"]
    )
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in (copy / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 50


def test_generate_writes_tunes_and_a_json_summary(run_dir, tmp_path):
    out = tmp_path / "out"
    args = ["generate", "--run-dir", str(run_dir), "--num", "3", "--out", str(out)]
    args += ["--max-length", "300", "--seed", r"X:1\nT:Test Tune\nM:6/8\nL:1/8\nK:D\n", "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 3
    for record in records:
        text = Path(record["abc"]).read_text()
        assert text.startswith("X:1\nT:Test Tune\nM:6/8\nL:1/8\nK:D\n")
        assert Path(record["abc"]).parent == out
        if record["valid"]:
            midi = mido.MidiFile(record["midi"])
            notes = [m for m in midi if m.type == "note_on" and m.velocity > 0]
            assert len(notes) == record["notes"] > 0
        else:
            assert record["reason"] and not record["midi"]
    # Same seed, same tunes; nothing overwritten: a second run gets new names.
    again = CliRunner().invoke(main, args)
    texts = [Path(json.loads(line)["abc"]).read_text() for line in again.stdout.splitlines()]
    assert texts == [Path(r["abc"]).read_text() for r in records]
    assert len(list(out.glob("*.abc"))) == 6


def test_generate_table_and_unknown_seed_character(run_dir, tmp_path):
    args = ["generate", "--run-dir", str(run_dir), "--num", "2", "--out", str(tmp_path)]
    result = CliRunner().invoke(main, [*args, "--max-length", "200", "--no-audio"])
    assert result.exit_code == 0, result.stderr
    assert "tunes are valid and rendered" in result.stdout
    bad = CliRunner().invoke(main, [*args, "--seed", "X:1\u2603"])
    assert bad.exit_code == 1
    assert bad.stderr.count("\n") == 1 and "'\u2603'" in bad.stderr


@pytest.mark.parametrize(
    "option", [["--num", "0"], ["--temperature", "-1"], ["--top-p", "1.5"], ["--top-k", "100000"]]
)
def test_generate_rejects_bad_settings_in_one_line(run_dir, tmp_path, option):
    args = ["generate", "--run-dir", str(run_dir), "--out", str(tmp_path), *option]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2  # a usage error, as click numbers them
    assert result.stderr.startswith("musicgen: error: ") and result.stderr.count("\n") == 1
    # The line names the option that is wrong, and nothing was written.
    assert option[0] in result.stderr
    assert not list(tmp_path.iterdir())


def test_render_and_play_a_real_tune(oneills_file, tmp_path, monkeypatch):
    tunes, _ = split_tunebook(read_text_file(oneills_file), str(oneills_file))
    abc = tmp_path / "kesh.abc"
    abc.write_text(tunes[0].text)
    result = CliRunner().invoke(main, ["render", str(abc)])
    assert result.exit_code == 0, result.stderr
    midi = pretty_midi.PrettyMIDI(str(tmp_path / "kesh.mid"))
    assert len(midi.instruments[0].notes) > 20
    wav = tmp_path / "kesh.wav"
    assert wav.stat().st_size > 44100  # more than a quarter second of 16-bit audio
    # No speakers here: a machine without a player gets the path and how to play it ...
    monkeypatch.setattr("musicgen.music.audio.find_player", lambda suffix=".wav": None)
    played = CliRunner().invoke(main, ["play", str(wav)])
    assert played.exit_code == 0 and str(wav) in played.stdout
    # ... and a player that fails is a one-line error.
    monkeypatch.setattr("musicgen.music.audio.find_player", lambda suffix=".wav": ["false"])
    failed = CliRunner().invoke(main, ["play", str(wav)])
    assert failed.exit_code == 1 and failed.stderr.count("\n") == 1
    assert f"false could not play {wav}" in failed.stderr
    missing = CliRunner().invoke(main, ["play", str(tmp_path / "nothing.wav")])
    assert missing.exit_code == 1 and missing.stderr.count("\n") == 1
    assert f"no such file to play: {tmp_path / 'nothing.wav'}" in missing.stderr
