"""A rolling update simulated on this machine: no request fails while every instance is replaced.

Two ferroserve processes (the release binary, ephemeral ports, drain delay 1 s through
FERROSERVE_SHUTDOWN__DRAIN_DELAY) stand behind a client-side pool that behaves like a Kubernetes
Service with readiness probes: a checker polls each instance's /v2/health/ready every 50 ms and
the clients send only to instances whose last answer was 200. Under continuous load from several
tritonclient.http threads each instance is replaced in turn, two ways:

  surge:   start the new instance, wait until it is ready, then SIGTERM the old one
           (the manifests' RollingUpdate: maxSurge 1, maxUnavailable 0);
  replace: SIGTERM the old instance, wait until it exits, then start the new one and wait until
           it is ready (maxUnavailable 1: the remaining instance carries the load meanwhile).

Either way every request must succeed with the right answer: an instance stops being ready at once
on SIGTERM and keeps serving through the drain delay, far longer than the 50 ms the pool takes to
notice, so no client is ever sent to a closed port.
"""

from __future__ import annotations

import itertools
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
import tritonclient.http as httpclient
from conftest import Server, load_reference, read_log, start_server

DRAIN_DELAY_S = 1.0
TIMEOUT_S = 10.0
CHECK_PERIOD_S = 0.05
CLIENT_THREADS = 4
INSTANCES = 2
MODELS = ("iris", "mlp")
SETTLE_S = 0.3  # load on the new set of instances between two steps
EXIT_SLACK_S = 3.0
TEST_BUDGET_S = 120.0  # the load stops by itself after this, whatever happens


def env() -> dict[str, str]:
    return {
        "FERROSERVE_SHUTDOWN__DRAIN_DELAY": str(DRAIN_DELAY_S),
        "FERROSERVE_SHUTDOWN__TIMEOUT": str(TIMEOUT_S),
    }


def ready_status(http_url: str) -> int | None:
    try:
        with urllib.request.urlopen(f"http://{http_url}/v2/health/ready", timeout=0.5) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code
    except (urllib.error.URLError, OSError):
        return None


@dataclass
class Instance:
    name: str
    server: Server


@dataclass
class Result:
    instance: str
    model: str
    ok: bool
    detail: str = ""


@dataclass
class Pool:
    """Instances known to the "Service"; `ready` is what the clients may send to."""

    instances: dict[str, Instance] = field(default_factory=dict)
    ready: tuple[Instance, ...] = ()
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    results: list[Result] = field(default_factory=list)
    no_endpoint: int = 0

    def add(self, inst: Instance) -> None:
        with self.lock:
            self.instances[inst.name] = inst

    def remove(self, inst: Instance) -> None:
        with self.lock:
            self.instances.pop(inst.name, None)
            self.ready = tuple(i for i in self.ready if i.name != inst.name)

    def wait_ready(self, inst: Instance, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(i.name == inst.name for i in self.ready):
            assert time.monotonic() < deadline, f"{inst.name} never entered the ready set"
            time.sleep(0.01)

    def check_loop(self) -> None:
        """The endpoints controller: one readiness probe per instance every CHECK_PERIOD_S."""
        deadline = time.monotonic() + TEST_BUDGET_S
        while not self.stop.is_set() and time.monotonic() < deadline:
            t0 = time.monotonic()
            with self.lock:
                candidates = list(self.instances.values())
            ready = tuple(i for i in candidates if ready_status(i.server.http_url) == 200)
            with self.lock:
                # An instance removed meanwhile must not come back.
                self.ready = tuple(i for i in ready if i.name in self.instances)
            self.stop.wait(max(0.0, CHECK_PERIOD_S - (time.monotonic() - t0)))

    def client_loop(self, worker: int) -> None:
        refs = {m: load_reference(m) for m in MODELS}
        clients: dict[str, httpclient.InferenceServerClient] = {}
        turn = itertools.count(worker)
        deadline = time.monotonic() + TEST_BUDGET_S
        try:
            while not self.stop.is_set() and time.monotonic() < deadline:
                n = next(turn)
                ready = self.ready
                if not ready:
                    with self.lock:
                        self.no_endpoint += 1
                    time.sleep(0.005)
                    continue
                inst = ready[n % len(ready)]
                model = MODELS[n % len(MODELS)]
                # Drop clients of instances that left the pool; one client per instance otherwise.
                for url in [u for u in clients if u not in {i.server.http_url for i in ready}]:
                    clients.pop(url).close()
                url = inst.server.http_url
                if url not in clients:
                    clients[url] = httpclient.InferenceServerClient(url, connection_timeout=5, network_timeout=15)
                try:
                    ok, detail = infer_and_check(clients[url], model, refs[model])
                except Exception as exc:  # noqa: BLE001 - every failure is recorded and asserted on
                    ok, detail = False, f"{type(exc).__name__}: {exc}"
                    clients.pop(url).close()
                with self.lock:
                    self.results.append(Result(inst.name, model, ok, detail))
        finally:
            for c in clients.values():
                c.close()


def infer_and_check(client, model: str, ref: dict) -> tuple[bool, str]:
    spec = ref["inputs"]["input"]
    x = np.asarray(spec["data"], dtype=np.float32).reshape(spec["shape"])
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer(model, [inp])
    for name, out in ref["outputs"].items():
        got = result.as_numpy(name)
        if out["datatype"] == "INT64":
            want = np.asarray(out["data"], dtype=np.int64).reshape(out["shape"])
            good = got is not None and got.shape == want.shape and np.array_equal(got, want)
        else:
            want = np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])
            good = got is not None and got.shape == want.shape and np.allclose(got, want, atol=1e-5)
        if not good:
            return False, f"{model} output {name}: got {got!r}, want {want!r}"
    return True, ""


def sigterm_and_wait(inst: Instance) -> float:
    """SIGTERM, wait for the exit; returns the seconds it took. The exit code must be 0."""
    t0 = time.monotonic()
    inst.server.process.send_signal(signal.SIGTERM)
    try:
        code = inst.server.process.wait(timeout=DRAIN_DELAY_S + TIMEOUT_S + EXIT_SLACK_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{inst.name} did not exit within drain + timeout after SIGTERM")
    assert code == 0, f"{inst.name} exited with code {code}"
    return time.monotonic() - t0


@pytest.mark.parametrize("strategy", ["surge", "replace"])
def test_rolling_update_under_load_fails_no_request(strategy: str, tmp_path: Path):
    pool = Pool()
    started: list[Instance] = []
    names = itertools.count()

    def launch() -> Instance:
        name = f"ferroserve-{next(names)}"
        inst = Instance(name, start_server(tmp_path / f"{name}.log", env()))
        started.append(inst)
        pool.add(inst)
        pool.wait_ready(inst)
        return inst

    threads = [threading.Thread(target=pool.check_loop, daemon=True)]
    threads += [threading.Thread(target=pool.client_loop, args=(w,), daemon=True) for w in range(CLIENT_THREADS)]
    try:
        threads[0].start()
        old = [launch() for _ in range(INSTANCES)]
        for t in threads[1:]:
            t.start()
        time.sleep(SETTLE_S)

        for inst in old:
            if strategy == "surge":
                launch()
                took = sigterm_and_wait(inst)
            else:
                took = sigterm_and_wait(inst)
                pool.remove(inst)
                launch()
            pool.remove(inst)
            assert took >= DRAIN_DELAY_S, f"{inst.name} exited {took:.2f} s after SIGTERM, before the drain delay"
            time.sleep(SETTLE_S)
    finally:
        pool.stop.set()
        for t in threads:
            t.join(timeout=20)
        for inst in started:
            if inst.server.process.poll() is None:
                inst.server.process.send_signal(signal.SIGKILL)
                inst.server.process.wait()

    assert not any(t.is_alive() for t in threads), "pool threads did not stop"
    results = pool.results
    failed = [r for r in results if not r.ok]
    per_instance = {i.name: sum(1 for r in results if r.instance == i.name) for i in started}
    summary = f"{len(results)} requests over {len(started)} instances: {per_instance}"
    print(summary)
    for inst in started:
        log = read_log(inst.server.log_path)
        assert "panicked" not in log, f"{inst.name} panicked:\n{log}"
    assert pool.no_endpoint == 0, f"{pool.no_endpoint} times no instance was ready ({summary})"
    assert not failed, f"{len(failed)} of {len(results)} requests failed ({summary}); first: {failed[:5]}"
    assert all(n > 0 for n in per_instance.values()), f"an instance served nothing: {summary}"
