import dataclasses
import json
import os

import pytest

from musicgen.config import ModelConfig, RunConfig
from musicgen.errors import CheckpointError
from musicgen.files import Publisher, atomic_write_text, safe_stem


def test_run_config_round_trip(tmp_path):
    config = RunConfig(model=ModelConfig(vocab_size=90, units=64))
    config = dataclasses.replace(
        config, data=dataclasses.replace(config.data, paths=("a.abc", "dir"))
    )
    config.save(tmp_path / "config.json")
    assert RunConfig.load(tmp_path / "config.json") == config


def test_run_config_rejects_other_versions_and_unknown_keys(tmp_path):
    raw = json.loads(RunConfig().to_json())
    raw["version"] = 0
    with pytest.raises(CheckpointError, match="version"):
        RunConfig.from_json(json.dumps(raw))
    raw = json.loads(RunConfig().to_json())
    raw["model"]["colour"] = "blue"
    with pytest.raises(CheckpointError, match="colour"):
        RunConfig.from_json(json.dumps(raw))
    with pytest.raises(CheckpointError, match="missing"):
        RunConfig.load(tmp_path / "config.json")


@pytest.mark.parametrize(
    "title",
    ["../../etc/passwd", "/abs/path", "..", ".", "", "CON", "nul", "a/b\\c", "x" * 500, "\x00\n"],
)
def test_safe_stem_never_escapes(tmp_path, title):
    stem = safe_stem(title)
    assert stem and "/" not in stem and "\\" not in stem and not stem.startswith(".")
    assert len(stem) <= 61
    assert stem.lower() not in {"con", "nul", "prn", "aux"}
    target = (tmp_path / f"{stem}.abc").resolve()
    assert target.parent == tmp_path.resolve()


def test_safe_stem_keeps_readable_titles():
    assert safe_stem("The Kesh Jig") == "The_Kesh_Jig"
    assert safe_stem("Róisín Dubh") == "Roisin_Dubh"


def test_publisher_skips_taken_names_and_atomic_write(tmp_path):
    (tmp_path / "tune.mid").write_bytes(b"x")
    with Publisher(tmp_path, (".abc", ".mid")) as publisher:
        staged = publisher.stage("tune", ".abc")
        staged.write_text("X:1")
        assert publisher.publish("tune", [staged]) == {".abc": tmp_path / "tune-2.abc"}
    assert (tmp_path / "tune.mid").read_bytes() == b"x"
    assert sorted(os.listdir(tmp_path)) == ["tune-2.abc", "tune.mid"]  # no staging folder left
    atomic_write_text(tmp_path / "a.txt", "hello")
    assert (tmp_path / "a.txt").read_text() == "hello"
    assert [p for p in os.listdir(tmp_path) if p.endswith(".tmp")] == []
