"""`musicgen serve` through Starlette's TestClient: every control, every bad value, the limits,
path traversal on downloads, a full queue; and the server started as a user starts it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path

import mido
import pytest
from cli_checks import default_sigint, train_tiny
from click.testing import CliRunner

from musicgen.cli import main
from musicgen.web.choices import ModelChoice, model_choices
from musicgen.web.forms import FieldError, GenerateRequest, Limits, parse_request
from musicgen.web.worker import QueueFull, Worker

# Eight real bars (The Kesh, a jig) for the tiny model to continue: its own notes are few and
# poor, so this keeps each tune long enough to be heard.
OPENING = "|:G3 GAB|A3 ABd|edd gdd|edB dBA|G3 GAB|A3 ABd|edd gdB|AGF G3:|"


_TRAINED: dict[str, Path] = {}  # the browser tests import this fixture: train once a session


@pytest.fixture(scope="session")
def tiny_run(oneills_file, tmp_path_factory) -> Path:
    """A one-layer LSTM trained for 40 steps on 50 O'Neill tunes (about 15 s)."""
    if "tiny" in _TRAINED:
        return _TRAINED["tiny"]
    run = tmp_path_factory.mktemp("web-runs") / "tiny"
    train_tiny(oneills_file, run, 40)
    _TRAINED["tiny"] = run
    return run


# ------------------------------------------------------------------------------------------------
# The form, without a model

MODELS = ["run:a", "run:b"]


def test_the_defaults_are_generates_defaults():
    request = parse_request({}, MODELS)
    assert request == GenerateRequest(model="run:a")
    assert request.sample_config().num == 4


def test_every_control_is_read():
    raw = {
        "model": "run:b", "key": "G", "meter": "6/8", "tune_type": "jig", "title": " The Test ",
        "opening": "\r\n|:GAB:|\r\n", "num": "3", "temperature": "1.25", "top_p": 0.5,
        "max_length": "700", "random_seed": 42,
    }  # fmt: skip
    request = parse_request(raw, MODELS)
    assert request == GenerateRequest(
        model="run:b", key="G", meter="6/8", tune_type="jig", title="The Test",
        opening="|:GAB:|", num=3, temperature=1.25, top_p=0.5, max_length=700, random_seed=42,
    )  # fmt: skip
    sample = request.sample_config()
    assert (sample.num, sample.temperature, sample.top_p, sample.max_length) == (3, 1.25, 0.5, 700)
    assert sample.random_seed == 42


BAD_VALUES = [
    ("model", "run:zzz"),
    ("model", "../../etc"),
    ("model", 3),
    ("key", "D]"),
    ("key", "x" * 41),
    ("meter", "6/8\nK:C"),
    ("tune_type", "reel%"),
    ("title", "a\nb"),
    ("title", "t" * 81),
    ("title", "%%beginsvg"),
    ("opening", "a" * 1001),
    ("opening", "GAB\x00"),
    ("num", 0),
    ("num", 9),
    ("num", "two"),
    ("num", 2.5),
    ("num", True),
    ("temperature", 0),
    ("temperature", "nan"),
    ("temperature", "inf"),
    ("temperature", 3.5),
    ("temperature", "warm"),
    ("top_p", 0),
    ("top_p", 1.01),
    ("max_length", 10),
    ("max_length", 2001),
    ("random_seed", -1),
    ("random_seed", 2**31),
    ("random_seed", "0x10"),
]


@pytest.mark.parametrize(("field", "value"), BAD_VALUES)
def test_a_bad_value_names_its_field(field, value):
    with pytest.raises(FieldError) as caught:
        parse_request({field: value}, MODELS)
    assert caught.value.field == field
    assert caught.value.as_json() == {"field": field, "error": caught.value.error}
    assert caught.value.error


def test_a_body_that_is_not_a_form_is_refused():
    for raw in ([], "num=3", None):
        with pytest.raises(FieldError, match="JSON object"):
            parse_request(raw, MODELS)
    with pytest.raises(FieldError) as caught:
        parse_request({"path": "/etc/passwd"}, MODELS)
    assert caught.value.field == "form"


def test_limits_are_the_servers():
    limits = Limits(max_tunes=2, max_length=300)
    assert parse_request({"num": 2, "max_length": 300}, MODELS, limits).num == 2
    for field, value in (("num", 3), ("max_length", 301)):
        with pytest.raises(FieldError, match="between"):
            parse_request({field: value}, MODELS, limits)


# ------------------------------------------------------------------------------------------------
# Model choices and the worker


def _fake_run(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    return folder


def test_model_choices_put_run_dir_first_then_the_newest_runs(tmp_path):
    root = tmp_path / "checkpoints"
    older = _fake_run(root / "older")
    newer = _fake_run(root / "newer")
    os.utime(older / "config.json", (1, 1))
    other = _fake_run(tmp_path / "elsewhere" / "newer")
    assert [c.run_dir for c in model_choices(None, root)] == [newer, older]
    choices = model_choices(other, root)
    assert [c.run_dir for c in choices] == [other, newer, older]
    assert len({c.id for c in choices}) == 3  # two runs named "newer" get distinct ids
    assert [c.run_dir for c in model_choices(older, root)] == [older, newer]


def test_model_choices_say_what_is_missing(tmp_path):
    from musicgen.errors import MusicgenError

    with pytest.raises(MusicgenError, match="musicgen train"):
        model_choices(None, tmp_path / "none")
    with pytest.raises(MusicgenError, match="not a trained run"):
        model_choices(tmp_path, tmp_path / "none")


def test_the_worker_runs_one_job_at_a_time_and_refuses_past_its_queue():
    worker = Worker(queue_size=2)
    gate, running, threads = threading.Event(), [], set()

    def job(n):
        def run():
            running.append(n)
            threads.add(threading.get_ident())
            gate.wait(5)
            assert running[-1] == n  # nothing started meanwhile
            return n

        return run

    first = worker.submit(job(1))
    while not running:
        time.sleep(0.01)
    waiting = [worker.submit(job(2)), worker.submit(job(3))]
    with pytest.raises(QueueFull):
        worker.submit(job(4))
    gate.set()
    assert [first.result(5), *(f.result(5) for f in waiting)] == [1, 2, 3]
    assert running == [1, 2, 3] and len(threads) == 1 and threads != {threading.get_ident()}
    failing = worker.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        failing.result(5)
    assert worker.submit(lambda: "still alive").result(5) == "still alive"
    worker.stop(5)


# ------------------------------------------------------------------------------------------------
# The app with the tiny model


@pytest.fixture(scope="module")
def service(tiny_run, tmp_path_factory):
    from musicgen.web.service import Service

    choices = [ModelChoice("run:tiny", "tiny", tiny_run)]
    service = Service(choices, tmp_path_factory.mktemp("served"), queue_size=2)
    service.warm_up().result(120)
    yield service
    service.stop()


@pytest.fixture(scope="module")
def client(service):
    from starlette.testclient import TestClient

    from musicgen.web.app import create_app

    with TestClient(create_app(service)) as client:
        yield client


def _generate(client, **fields):
    return client.post("/api/generate", json=fields)


@pytest.mark.slow
def test_the_page_and_its_assets_are_served_by_us(client):
    page = client.get("/")
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(s.startswith("/") for s in sources), sources  # nothing from a CDN
    for source in sources:
        assert client.get(source).status_code == 200, source
    for field in ("model", "key", "meter", "tune_type", "temperature", "top_p", "num",
                  "random_seed", "opening", "max_length", "title"):  # fmt: skip
        assert f'id="{field}"' in page.text and f'id="error-{field}"' in page.text
    assert 'value="run:tiny"' in page.text


@pytest.mark.slow
def test_options_are_the_models_training_headers(client):
    answer = client.get("/api/options", params={"model": "run:tiny"}).json()
    assert "G" in answer["keys"] and "6/8" in answer["meters"]
    assert answer["limits"]["max_tunes"] == Limits().max_tunes
    bad = client.get("/api/options", params={"model": "../tiny"})
    assert bad.status_code == 400 and bad.json()["field"] == "model"


@pytest.mark.slow
def test_generate_returns_tunes_with_every_file(client):
    response = _generate(
        client, key="G", meter="6/8", title="Served Tune", opening=OPENING, num=2,
        temperature=0.1, top_p=0.9, random_seed=3, max_length=160,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    batch = response.json()
    assert re.fullmatch(r"[0-9a-f]{32}", batch["batch"])
    assert batch["seed"].endswith(OPENING + "\n") or OPENING in batch["seed"]
    assert len(batch["tunes"]) == 2
    for tune in batch["tunes"]:
        assert tune["abc"].startswith(batch["seed"].rstrip("\n")[:20])
        assert "K:G" in tune["abc"] and "M:6/8" in tune["abc"] and "T:Served Tune" in tune["abc"]
        assert len(tune["abc"].rstrip("\n")) <= 160
        assert set(tune["files"]) >= {"abc", "mid", "wav"}
        abc = client.get(tune["files"]["abc"])
        assert abc.status_code == 200 and abc.text == tune["abc"]
        midi = client.get(tune["files"]["mid"])
        assert midi.headers["content-type"] == "audio/midi"
        notes = [m for m in mido.MidiFile(file=_bytes_io(midi.content)) if m.type == "note_on"]
        assert len([m for m in notes if m.velocity]) == tune["notes"] > 0
        wav = client.get(tune["files"]["wav"])
        with wave.open(_bytes_io(wav.content)) as audio:
            assert audio.getnframes() / audio.getframerate() > 5
        download = client.get(tune["files"]["wav"], params={"download": "1"})
        assert download.headers["content-disposition"].startswith("attachment")
        assert isinstance(tune["valid"], bool)
        if not tune["valid"]:
            assert tune["failed"] and all(f["check"] and f["reason"] for f in tune["failed"])
        assert tune["nearest"]["chars"] >= len(tune["nearest"]["phrase"])
        assert tune["nearest"]["phrase"] in tune["abc"]
        if "svg" in tune["files"]:
            svg = client.get(tune["files"]["svg"])
            assert svg.headers["content-type"].startswith("image/svg+xml")
            assert "sandbox" in svg.headers["content-security-policy"]
            assert 'class="note"' in svg.text
        else:
            assert tune["score_reason"]


@pytest.mark.slow
def test_the_nearest_training_tune_is_found_with_the_shared_phrase(client, service):
    from musicgen.evaluation.novelty import body
    from musicgen.music.abc import header_fields

    training = service._loaded["run:tiny"].train_texts[5]
    line = body(training)[:80]
    response = _generate(client, opening=line, num=1, temperature=0.1, max_length=len(line) + 60)
    assert response.status_code == 200, response.text
    nearest = response.json()["tunes"][0]["nearest"]
    assert nearest["title"] == header_fields(training)["T"]
    assert line in nearest["phrase"] and nearest["phrase"] in body(training)
    assert nearest["chars"] >= len(line)


def _bytes_io(data: bytes):
    import io

    return io.BytesIO(data)


@pytest.mark.slow
def test_the_same_random_seed_gives_the_same_tunes(client):
    fields = {"num": 2, "max_length": 200, "random_seed": 11, "temperature": 1.0}
    first, again = _generate(client, **fields).json(), _generate(client, **fields).json()
    assert [t["abc"] for t in first["tunes"]] == [t["abc"] for t in again["tunes"]]
    assert first["batch"] != again["batch"]
    other = _generate(client, **{**fields, "random_seed": 12}).json()
    assert [t["abc"] for t in other["tunes"]] != [t["abc"] for t in first["tunes"]]


@pytest.mark.slow
@pytest.mark.parametrize(("field", "value"), BAD_VALUES)
def test_every_bad_value_is_400_naming_its_field(client, field, value):
    response = _generate(client, **{field: value})
    assert response.status_code == 400
    assert response.json()["field"] == field and response.json()["error"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("field", "value"),
    [("key", "F#lyd"), ("meter", "11/8"), ("title", "Ω"), ("opening", "GAB~€")],
)
def test_values_the_model_never_saw_are_400(client, field, value):
    response = _generate(client, **{field: value})
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field


@pytest.mark.slow
def test_the_tune_type_writes_the_r_field_or_is_refused_by_name(client, service):
    types = client.get("/api/options").json()["tune_types"]
    response = _generate(client, tune_type="reel", num=1, max_length=120)
    if "reel" in types:
        assert response.status_code == 200
        assert "R:" in response.json()["tunes"][0]["abc"]
    else:  # the O'Neill tunes the tiny model learnt carry no R: field
        assert response.status_code == 400 and response.json()["field"] == "tune_type"
        assert "tune type" in response.json()["error"] and "--" not in response.json()["error"]


@pytest.mark.slow
def test_an_opening_of_music_needs_a_key_when_other_controls_are_set(client):
    response = _generate(client, meter="6/8", opening="|:GAB AGE:|")
    assert response.status_code == 400
    assert response.json()["field"] == "key" and "--" not in response.json()["error"]


@pytest.mark.slow
def test_other_host_headers_are_refused(service):
    from starlette.testclient import TestClient

    from musicgen.web.app import create_app
    from musicgen.web.serve import _allowed_hosts

    app = create_app(service, allowed_hosts=_allowed_hosts("127.0.0.1"))
    client = TestClient(app, base_url="http://127.0.0.1:8000")
    assert client.get("/api/models").status_code == 200
    assert client.get("/api/models", headers={"host": "localhost:8000"}).status_code == 200
    assert client.get("/api/models", headers={"host": "evil.example:8000"}).status_code == 400


@pytest.mark.slow
def test_the_opening_must_leave_room_to_write(client):
    response = _generate(client, opening=OPENING * 3, max_length=100)
    assert response.status_code == 400 and response.json()["field"] == "max_length"


@pytest.mark.slow
def test_malformed_requests_are_refused(client):
    assert client.post("/api/generate", content=b"{", headers=_json).status_code == 400
    form = client.post("/api/generate", data={"num": "2"})
    assert form.status_code == 415  # only JSON: another site's form cannot start a batch
    huge = client.post("/api/generate", content=b" " * 70_000, headers=_json)
    assert huge.status_code == 413
    assert client.get("/api/generate").status_code == 405


_json = {"content-type": "application/json"}


@pytest.mark.slow
@pytest.mark.parametrize(
    "path",
    [
        "/files/{batch}/..%2F..%2Fconfig.json",
        "/files/{batch}/%2E%2E/x",
        "/files/..%2F{batch}/x.abc",
        "/files/{batch}/nothere.abc",
        "/files/{batch}/.{name}",
        "/files/00000000000000000000000000000000/{name}",
        "/files/{batch}x/{name}",
        "/files/{batch}/..\\{name}",
        "/files/../../etc/passwd",
        "/static/../app.py",
        "/static/..%2Fapp.py",
        "/files/{batch}/%2Fetc%2Fpasswd",
    ],
)
def test_only_files_the_server_wrote_are_served(client, service, path):
    batch = _generate(client, num=1, max_length=100).json()
    name = batch["tunes"][0]["files"]["abc"].rsplit("/", 1)[1]
    (service.out_root / batch["batch"] / "planted.abc").write_text("X:1\n")  # not written by it
    assert client.get(f"/files/{batch['batch']}/{name}").status_code == 200
    response = client.get(path.format(batch=batch["batch"], name=name))
    assert response.status_code == 404, response.text
    assert client.get(f"/files/{batch['batch']}/planted.abc").status_code == 404


@pytest.mark.slow
def test_a_full_queue_is_503_with_retry_after(client, service):
    gate, started = threading.Event(), threading.Event()
    running = service.worker.submit(lambda: (started.set(), gate.wait(30)))
    assert started.wait(30)
    blockers = [service.worker.submit(lambda: None) for _ in range(service.worker.queue_size)]
    try:
        response = _generate(client, num=1, max_length=100)
        assert response.status_code == 503
        assert int(response.headers["retry-after"]) >= 1
        assert response.json()["field"] == "form"
    finally:
        gate.set()
    running.result(10)
    for blocker in blockers:
        blocker.result(10)
    assert _generate(client, num=1, max_length=100).status_code == 200


@pytest.mark.slow
def test_concurrent_requests_each_get_their_own_batch(client):
    answers = {}

    def ask(seed):
        answers[seed] = _generate(client, num=1, max_length=150, random_seed=seed)

    threads = [threading.Thread(target=ask, args=(seed,)) for seed in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    alone = {seed: _generate(client, num=1, max_length=150, random_seed=seed) for seed in (1, 2)}
    for seed in (1, 2):
        assert answers[seed].status_code in (200, 503)
        if answers[seed].status_code == 200:
            assert answers[seed].json()["tunes"][0]["abc"] == alone[seed].json()["tunes"][0]["abc"]


@pytest.mark.slow
def test_user_text_stays_text(client):
    title = '<img src=x onerror="alert(1)">'
    response = _generate(client, title=title, num=1, max_length=200)
    if response.status_code == 400:
        assert response.json()["field"] == "title"  # characters the tiny model never saw
        return
    tune = response.json()["tunes"][0]
    assert tune["title"] == title  # returned as JSON data; the page sets it as textContent
    script = Path(__file__).parents[1] / "musicgen" / "web" / "static" / "app.js"
    assert "innerHTML" not in script.read_text() and "insertAdjacentHTML" not in script.read_text()


# ------------------------------------------------------------------------------------------------
# The command


def _start_server(run_dir: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    """`musicgen serve --port 0` in a subprocess; (process, base URL) once it listens."""
    command = [sys.executable, "-m", "musicgen", "serve", "--run-dir", str(run_dir), "--port", "0"]
    process = subprocess.Popen(
        [*command, *extra], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    lines = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line and process.poll() is not None:
            break
        lines.append(line)
        found = re.search(r"serving (http://\S+/)", line)
        if found:
            threading.Thread(target=process.stderr.read, daemon=True).start()  # keep it drained
            return process, found.group(1)
    process.kill()
    raise AssertionError("server did not start:\n" + "".join(lines))


@pytest.mark.slow
def test_serve_listens_on_loopback_and_stops_cleanly_on_ctrl_c(tiny_run):
    import urllib.request

    process, url = _start_server(tiny_run)
    try:
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url + "api/models", timeout=30) as answer:
            assert json.load(answer)["models"][0]["label"].startswith("tiny")
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0


def _post_json(url: str, fields: dict) -> dict:
    import urllib.request

    request = urllib.request.Request(
        url, data=json.dumps(fields).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as answer:
        return json.load(answer)


def _engraver_processes(pid: int) -> list[int]:
    """Child processes of `pid` running musicgen's engraver worker (Linux /proc)."""
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return [
        child
        for child in children
        if b"musicgen.music.score" in Path(f"/proc/{child}/cmdline").read_bytes()
    ]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_a_killed_engraver_leaves_the_server_running(tiny_run):
    process, url = _start_server(tiny_run)
    fields = {"key": "G", "meter": "6/8", "opening": OPENING, "num": 1, "temperature": 0.1}
    fields["max_length"] = 160
    try:
        first = _post_json(url + "api/generate", fields)
        assert "svg" in first["tunes"][0]["files"]
        engravers = _engraver_processes(process.pid)
        assert engravers, "the engraver should run in a process of its own"
        for pid in engravers:
            os.kill(pid, signal.SIGKILL)  # as verovio's C++ abort would end it
        again = _post_json(url + "api/generate", fields)
        assert again["tunes"][0]["abc"] == first["tunes"][0]["abc"]
        assert "svg" in again["tunes"][0]["files"]  # a new engraver took over
        assert process.poll() is None
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0


@pytest.mark.slow
def test_serve_warns_loudly_off_loopback(tiny_run):
    command = [sys.executable, "-m", "musicgen", "serve", "--run-dir", str(tiny_run)]
    process = subprocess.Popen(
        [*command, "--host", "0.0.0.0", "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )
    try:
        head = "".join(process.stderr.readline() for _ in range(3))
        assert "WARNING" in head and "0.0.0.0" in head
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(60)


def test_only_loopback_addresses_count_as_local():
    from musicgen.web.serve import _allowed_hosts, is_loopback

    assert all(map(is_loopback, ("127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]")))
    assert not any(map(is_loopback, ("0.0.0.0", "::", "192.168.1.5", "example.com", "")))
    assert "*" not in _allowed_hosts("127.0.0.1") and "evil.example" not in _allowed_hosts("::1")
    assert _allowed_hosts("0.0.0.0") == ["*"]  # a wildcard bind answers any name (and warns)


def test_serve_without_a_model_is_one_line(tmp_path):
    result = CliRunner().invoke(main, ["serve", "--run-dir", str(tmp_path), "--port", "0"])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "not a trained run" in result.stderr


def test_serve_on_a_busy_port_is_one_line(tmp_path):
    import socket

    _fake_run(tmp_path / "run")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = CliRunner().invoke(
            main, ["serve", "--run-dir", str(tmp_path / "run"), "--port", port]
        )
    assert result.exit_code == 1
    assert "cannot listen" in result.stderr and "--port" in result.stderr
