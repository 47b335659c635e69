"""Graceful drain of the release binary on SIGTERM, seen from unmodified tritonclient.

What the server promises (src/server.rs, `shutdown` in src/config/server.rs): on SIGTERM readiness turns
false at once (HTTP /v2/health/ready 503, gRPC ServerReady false) while liveness stays true; it
keeps serving for `shutdown.drain_delay` seconds (answers carry `Connection: close`, so clients
re-connect and their load balancer can move them), then closes its listeners and gives requests in
flight up to `shutdown.timeout` seconds; it exits 0.

The servers here are configured through the environment (FERROSERVE_SHUTDOWN__DRAIN_DELAY,
FERROSERVE_SHUTDOWN__TIMEOUT), as a container would be, not through command-line flags.

How requests are counted (as in tests/shutdown.rs): the listener closes `drain_delay` after the
signal is handled, so no earlier than t_close = t_signal + drain_delay. Every request started
before t_close - 2 ms must succeed with the right answer. A connection the kernel completes in
the last moment before the close is reset without ever reaching the server (as with any server;
the drain delay is what keeps clients away by then), so a request started within 2 ms of the close
that gets a connection error counts as not sent. After the close only connection errors
(refused, reset) are allowed; an HTTP error or a wrong answer is a failure at any time.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from conftest import load_reference, read_log, start_server

DRAIN_DELAY_S = 1.0
TIMEOUT_S = 10.0
CLIENT_THREADS = 6
READY_503_WITHIN_S = 0.1  # readiness turns false "at once"
CLOSE_SLACK_S = 0.002  # a connection completed within this of the close may be reset unseen
# A refused connect proves the listener was already closed when it arrived. `started` is taken
# before the client builds the request and opens its connection (during the drain every answer
# closes its connection, so each request connects anew), which takes a few ms on a loaded 2-core
# machine: a refusal of a request started within this of the close was connected after it. Other
# failures keep the 2 ms slack. (Measured: the 99a6ba6 binary and today's both saw one refusal at
# 0.9977-0.9979 s with a 1 s drain in about 1 run of 5.)
REFUSED_SLACK_S = 0.02
EXIT_SLACK_S = 3.0  # process start-up of the signal handler, scheduling on a loaded 2-core CI box
MODEL = "mlp"


def drain_env(drain_delay: float, timeout: float) -> dict[str, str]:
    return {
        "FERROSERVE_SHUTDOWN__DRAIN_DELAY": str(drain_delay),
        "FERROSERVE_SHUTDOWN__TIMEOUT": str(timeout),
    }


def http_get(url: str, timeout: float = 1.0) -> tuple[int | None, dict[str, str]]:
    """Status and headers of a GET, or (None, {}) when there is no HTTP answer."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}
    except (urllib.error.URLError, OSError):
        return None, {}


def is_connection_error(exc: BaseException) -> bool:
    """No HTTP answer at all: refused, or reset/closed before any response byte."""
    if isinstance(exc, OSError):  # ConnectionRefusedError, ConnectionResetError, BrokenPipeError
        return True
    # geventhttpclient reports a connection closed before the status line with its own classes.
    name = type(exc).__name__
    return name in {"HTTPConnectionClosed", "HTTPProtocolViolationError"}


@dataclass
class Outcome:
    started: float
    finished: float
    ok: bool
    connection_error: bool = False
    detail: str = ""


@dataclass
class Load:
    """CLIENT_THREADS tritonclient.http clients sending `MODEL` requests back to back."""

    url: str
    reference: dict
    outcomes: list[Outcome] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for _ in range(CLIENT_THREADS):
            t = threading.Thread(target=self._run, daemon=True)
            t.start()
            self.threads.append(t)

    def join(self, timeout: float) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout)
        assert not any(t.is_alive() for t in self.threads), "client threads did not stop"

    def _run(self) -> None:
        x = np.asarray(self.reference["inputs"]["input"]["data"], dtype=np.float32).reshape(
            self.reference["inputs"]["input"]["shape"]
        )
        want = np.asarray(self.reference["outputs"]["output"]["data"], dtype=np.float32).reshape(
            self.reference["outputs"]["output"]["shape"]
        )
        client = httpclient.InferenceServerClient(self.url, connection_timeout=5, network_timeout=15)
        try:
            deadline = time.monotonic() + 60  # bounded whatever happens
            while not self.stop.is_set() and time.monotonic() < deadline:
                inp = httpclient.InferInput("input", list(x.shape), "FP32")
                inp.set_data_from_numpy(x)
                started = time.monotonic()
                try:
                    result = client.infer(MODEL, [inp])
                    got = result.as_numpy("output")
                    ok = got is not None and got.shape == want.shape and np.allclose(got, want, atol=1e-5)
                    outcome = Outcome(started, time.monotonic(), ok, detail="" if ok else f"wrong output {got!r}")
                except Exception as exc:  # noqa: BLE001 - every failure is recorded and judged below
                    outcome = Outcome(
                        started,
                        time.monotonic(),
                        False,
                        connection_error=is_connection_error(exc),
                        detail=f"{type(exc).__name__}: {exc}",
                    )
                    # A fresh client (fresh connection pool) after any error, as a real one would.
                    client.close()
                    client = httpclient.InferenceServerClient(self.url, connection_timeout=5, network_timeout=15)
                    if outcome.connection_error:
                        time.sleep(0.005)  # don't spin on a refused port
                with self.lock:
                    self.outcomes.append(outcome)
        finally:
            client.close()


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "server.log"


def test_sigterm_under_load_drains_without_failed_requests(log_path: Path):
    srv = start_server(log_path, drain_env(DRAIN_DELAY_S, TIMEOUT_S))
    http = f"http://{srv.http_url}"
    load = Load(srv.http_url, load_reference(MODEL))
    try:
        load.start()
        time.sleep(0.5)
        with load.lock:
            assert any(o.ok for o in load.outcomes), f"no request succeeded before the signal: {load.outcomes[:5]}"

        t_signal = time.monotonic()
        srv.process.send_signal(signal.SIGTERM)

        # Readiness: 503 at once, polled as fast as the client allows.
        t_unready = None
        while time.monotonic() - t_signal < 2.0:
            status, _ = http_get(f"{http}/v2/health/ready")
            if status == 503:
                t_unready = time.monotonic()
                break
            time.sleep(0.002)
        assert t_unready is not None, "readiness never turned 503 after SIGTERM"
        assert t_unready - t_signal <= READY_503_WITHIN_S, (
            f"readiness turned 503 {1000 * (t_unready - t_signal):.0f} ms after SIGTERM "
            f"(want <= {1000 * READY_503_WITHIN_S:.0f} ms)"
        )

        # During the drain: live, not ready (HTTP and gRPC), and answers close their connections.
        assert time.monotonic() - t_signal < DRAIN_DELAY_S * 0.5, "too slow to check the drain state"
        live, _ = http_get(f"{http}/v2/health/live")
        assert live == 200, f"liveness during the drain: {live}"
        grpc = grpcclient.InferenceServerClient(srv.grpc_url)
        try:
            assert grpc.is_server_live()
            assert grpc.is_server_ready() is False
        finally:
            grpc.close()
        status, headers = http_get(f"{http}/v2/health/ready")
        assert status == 503
        assert headers.get("connection", "").lower() == "close", f"headers during the drain: {headers}"

        try:
            code = srv.process.wait(timeout=DRAIN_DELAY_S + TIMEOUT_S + EXIT_SLACK_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"ferroserve did not exit within drain + timeout ({DRAIN_DELAY_S + TIMEOUT_S} s)")
        t_exit = time.monotonic()
        assert code == 0, f"exit code {code}"
        assert t_exit - t_signal >= DRAIN_DELAY_S, "exited before the drain delay was over"
        # Let the clients see the closed port for a moment, then stop them.
        time.sleep(0.2)
    finally:
        load.join(timeout=20)
        if srv.process.poll() is None:
            srv.process.kill()
            srv.process.wait()

    t_close = t_signal + DRAIN_DELAY_S
    outcomes = sorted(load.outcomes, key=lambda o: o.started)
    before = [o for o in outcomes if o.started < t_close - CLOSE_SLACK_S]
    failed_before = [
        o
        for o in before
        if not o.ok
        and not (o.detail.startswith("ConnectionRefusedError") and o.started >= t_close - REFUSED_SLACK_S)
    ]
    served_in_drain = [o for o in before if o.ok and o.started > t_signal]
    after = [o for o in outcomes if o.started >= t_close - CLOSE_SLACK_S]
    failed_after = [o for o in after if not o.ok and not o.connection_error]
    summary = (
        f"{len(outcomes)} requests: {len(before)} started before the listener closed "
        f"({len(served_in_drain)} of them during the drain), {len(after)} after"
    )
    print(summary)
    log = read_log(log_path)
    assert "panicked" not in log, log
    assert served_in_drain, f"no request was served during the drain delay ({summary})"
    assert not failed_before, (
        f"{len(failed_before)} of {len(before)} requests sent before the listener closed failed "
        f"({summary}); first: {[(round(o.started - t_signal, 4), o.detail) for o in failed_before[:5]]}"
    )
    assert not failed_after, (
        f"after the close only connection errors are allowed: "
        f"{[(round(o.started - t_signal, 4), o.detail) for o in failed_after[:5]]}"
    )
    assert "shutdown requested" in log, log


def test_second_sigterm_during_drain_exits_at_once(log_path: Path):
    long_drain = 30.0
    srv = start_server(log_path, drain_env(long_drain, TIMEOUT_S))
    try:
        srv.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 2.0
        while http_get(f"http://{srv.http_url}/v2/health/ready")[0] != 503:
            assert time.monotonic() < deadline, "readiness never turned 503 after the first SIGTERM"
            time.sleep(0.01)
        assert srv.process.poll() is None, "exited on the first signal instead of draining"
        t_second = time.monotonic()
        srv.process.send_signal(signal.SIGTERM)
        try:
            srv.process.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {time.monotonic() - t_second:.1f} s after the second SIGTERM")
        assert time.monotonic() - t_second < 2.0
    finally:
        if srv.process.poll() is None:
            srv.process.kill()
            srv.process.wait()
    assert "panicked" not in read_log(log_path)
