"""Fixtures for the end-to-end suite: one ferroserve process for the whole session.

The server is started from the repository root on ephemeral ports (`--*-port 0`); the bound
addresses are read back from its start-up log line (`http_addr=... grpc_addr=... metrics_addr=...`),
so there is no port-picking race. Its stdout/stderr go to a temp file that is shown when start-up
fails or a test fails, and that must not contain "panicked" when the session ends.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = REPO_ROOT / "tests" / "data"
MODELS = ("iris", "digits", "mlp")

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_ADDR = r'"?(\d{1,3}(?:\.\d{1,3}){3}:\d+)"?'
_ADDRS = {key: re.compile(rf"\b{key}={_ADDR}") for key in ("http_addr", "grpc_addr", "metrics_addr")}

# The log of the running server, for the failure report hook below.
_SERVER_LOG: Path | None = None


@dataclass
class Server:
    http_url: str  # "127.0.0.1:PORT", the form tritonclient wants
    grpc_url: str
    metrics_url: str
    log_path: Path
    process: subprocess.Popen

    def log(self) -> str:
        return read_log(self.log_path)


def read_log(path: Path) -> str:
    try:
        return _ANSI.sub("", path.read_text(encoding="utf-8", errors="replace"))
    except FileNotFoundError:
        return ""


def _tail(text: str, lines: int = 80) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _server_binary() -> Path:
    raw = os.environ.get("FERROSERVE_BIN", str(REPO_ROOT / "target" / "release" / "ferroserve"))
    path = Path(raw)
    if not path.is_absolute():
        path = REPO_ROOT / path
    return path


def _http_status(url: str, context: ssl.SSLContext | None = None) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code
    except (urllib.error.URLError, OSError):
        return None


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_S)


def start_server(
    log_path: Path,
    env_overrides: dict[str, str] | None = None,
    timeout_s: float = START_TIMEOUT_S,
    https_context: ssl.SSLContext | None = None,
    repository: str | Path = "models",
    serve_args: list[str] | None = None,
    unset_env: tuple[str, ...] = (),
) -> Server:
    """Starts the release binary on 127.0.0.1 with ephemeral ports and waits until it is ready.

    `env_overrides` are added to the environment (e.g. `FERROSERVE_SHUTDOWN__DRAIN_DELAY`); the
    process's output goes to `log_path`. `https_context`: the HTTP port speaks TLS (configured
    in `env_overrides`), and readiness is asked over HTTPS with this context. Fails the test (and stops the process) when the server
    exits, logs no addresses, or is not ready within `timeout_s`.
    `serve_args`: the arguments of `ferroserve serve` instead of the repository and ephemeral
    ports above (they must bind port 0 on 127.0.0.1 themselves).
    `unset_env`: variables removed from the environment after the defaults (e.g. the suite's
    admin token, for a server run as Triton's examples expect: no token).
    """
    binary = _server_binary()
    if not binary.is_file():
        pytest.fail(f"ferroserve binary not found at {binary} (build it with cargo build --release)")

    cmd = [
        str(binary),
        "serve",
        "--model-repository",
        str(repository),
        "--host",
        "127.0.0.1",
        "--http-port",
        "0",
        "--grpc-port",
        "0",
        "--metrics-port",
        "0",
    ]
    if serve_args is not None:
        cmd = [str(binary), "serve", *serve_args]
    env = dict(os.environ)
    env.setdefault("NO_COLOR", "1")
    env.setdefault("RUST_BACKTRACE", "1")
    # The suite never changes models: a fixed token keeps each server from writing the shared
    # default admin token file (a server without one makes a token and writes it there).
    env.setdefault("FERROSERVE_ADMIN_TOKEN", "e2e-suite-admin-token")
    env.update(env_overrides or {})
    for name in unset_env:
        env.pop(name, None)
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def fail_start(why: str) -> None:
        _stop(process)
        log = read_log(log_path)
        print(f"---- ferroserve output ({log_path}) ----\n{log}\n---- end ----")
        pytest.fail(f"ferroserve did not start: {why}\ncommand: {' '.join(cmd)}\n{_tail(log)}")

    deadline = time.monotonic() + timeout_s
    addrs: dict[str, str] = {}
    while time.monotonic() < deadline:
        if process.poll() is not None:
            fail_start(f"exited with code {process.returncode} before logging its addresses")
        log = read_log(log_path)
        for line in log.splitlines():
            found = {key: rx.search(line) for key, rx in _ADDRS.items()}
            if all(found.values()):
                addrs = {key: m.group(1) for key, m in found.items()}
                break
        if addrs:
            break
        time.sleep(0.05)
    else:
        fail_start(f"no line with http_addr=, grpc_addr= and metrics_addr= within {timeout_s:.0f} s")

    scheme = "https" if https_context else "http"
    ready_url = f"{scheme}://{addrs['http_addr']}/v2/health/ready"
    while True:
        if process.poll() is not None:
            fail_start(f"exited with code {process.returncode} before becoming ready")
        if _http_status(ready_url, https_context) == 200:
            break
        if time.monotonic() > deadline:
            fail_start(f"GET {ready_url} did not return 200 within {timeout_s:.0f} s")
        time.sleep(0.1)

    return Server(
        http_url=addrs["http_addr"],
        grpc_url=addrs["grpc_addr"],
        metrics_url=addrs["metrics_addr"],
        log_path=log_path,
        process=process,
    )


@pytest.fixture(scope="session")
def server():
    global _SERVER_LOG

    log_dir = Path(tempfile.mkdtemp(prefix="ferroserve-e2e-"))
    log_path = log_dir / "server.log"
    _SERVER_LOG = log_path
    srv = start_server(log_path)
    try:
        yield srv
    finally:
        _stop(srv.process)
        log = read_log(log_path)
        _SERVER_LOG = None
        assert "panicked" not in log, f"ferroserve panicked during the session (log kept at {log_path}):\n{log}"
        shutil.rmtree(log_dir, ignore_errors=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and _SERVER_LOG is not None:
        report.sections.append(("ferroserve log (tail)", _tail(read_log(_SERVER_LOG), 60)))


def load_reference(model: str) -> dict:
    """tests/data/<model>.json: {"model", "inputs": {name: {datatype, shape, data}}, "outputs": {...}}."""
    with open(DATA_DIR / f"{model}.json", encoding="utf-8") as f:
        ref = json.load(f)
    assert ref.get("model", model) == model
    return ref


@pytest.fixture(scope="session")
def references() -> dict[str, dict]:
    return {model: load_reference(model) for model in MODELS}
