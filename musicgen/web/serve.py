"""`musicgen serve`: loads the model, binds the socket, runs the app under uvicorn until Ctrl-C."""

from __future__ import annotations

import ipaddress
import socket
import sys
import tempfile
from pathlib import Path

from musicgen.errors import MusicgenError


def _say(message: str) -> None:
    print(f"musicgen: {message}", file=sys.stderr, flush=True)


def serve(
    run_dir: Path | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    checkpoints: Path = Path("checkpoints"),
    queue_size: int = 4,
) -> None:
    """Serves the page on `host`:`port` until interrupted; files live in a temporary folder.

    Args:
        run_dir: the default model's run; None for the newest run under `checkpoints`.
        host: the address to bind; anything but loopback is announced loudly on stderr.
        port: the port; 0 picks a free one (the address is printed).
        checkpoints: where other runs offered on the page are found.
        queue_size: requests that may wait behind the running batch before 503.

    Raises:
        MusicgenError: no model, a run that cannot be loaded, or an address that cannot be bound.
    """
    import uvicorn

    from musicgen.web.app import create_app
    from musicgen.web.choices import model_choices
    from musicgen.web.service import Service

    choices = model_choices(run_dir, checkpoints)
    sock = _bind(host, port)
    if not is_loopback(host):
        _warn_public(host)
    with sock, tempfile.TemporaryDirectory(prefix="musicgen-serve-") as out_root:
        service = Service(choices, Path(out_root), queue_size=queue_size)
        _say(f"loading {choices[0].label} ...")
        try:
            service.warm_up().result()
        except BaseException:
            service.stop()
            raise
        bound_host, bound_port = sock.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        app = create_app(service, allowed_hosts=_allowed_hosts(host))
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, timeout_graceful_shutdown=5
        )
        _say(f"serving http://{shown}:{bound_port}/ (Ctrl-C stops)")
        try:
            uvicorn.Server(config).run(sockets=[sock])
        except KeyboardInterrupt:
            pass  # uvicorn has shut down already; Ctrl-C is how a server is meant to stop
        finally:
            service.stop()
        _say("stopped")


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine's loopback interface only (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket, so a busy port is one clear line before any model is loaded."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise MusicgenError(f"--host {host}: not an address of this machine ({exc})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise MusicgenError(
            f"cannot listen on {host}:{port} ({exc.strerror}); pass another --port"
        ) from None
    sock.set_inheritable(True)
    return sock


def _warn_public(host: str) -> None:
    bar = "!" * 72
    _say(bar)
    _say(f"WARNING: listening on {host}, not on 127.0.0.1: other machines can reach this page,")
    _say("start batches on this computer and download what it writes. There is no login.")
    _say("Use --host 127.0.0.1 unless you mean it.")
    _say(bar)


def _allowed_hosts(host: str) -> list[str]:
    """Host headers to answer: loopback names, plus `host` itself (any, for a wildcard bind)."""
    if host in ("0.0.0.0", "::", ""):
        return ["*"]
    return sorted({"127.0.0.1", "localhost", "::1", "[::1]", host, f"[{host}]"})
