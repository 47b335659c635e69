"""Helpers for the monitoring tests: a real Prometheus (Debian package `prometheus`, installed
by scripts/setup-test-env.sh) on a free port scraping one ferroserve, the rule file rendered
from k8s/monitoring/prometheus-rules.yaml, the dashboard's expressions, and a load generator.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
RULES = REPO_ROOT / "k8s" / "monitoring" / "prometheus-rules.yaml"
DASHBOARD = REPO_ROOT / "k8s" / "monitoring" / "grafana-dashboard.json"

# Every rule's `for:` and every group's interval in the test: seconds instead of minutes.
FOR_IN_TEST = "1s"
INTERVAL_IN_TEST = "1s"
# What the dashboard's variables stand for here: every model and version, 15 s rate windows
# (15 scrapes at the test's 1 s interval).
DASHBOARD_VARS = {"$model": ".+", "$version": ".*", "$__rate_interval": "15s"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rule_groups(for_value: str | None = None, interval: str | None = None) -> list[dict]:
    """The PrometheusRule's groups as a Prometheus rule file wants them, `for:` and the group
    interval replaced when given."""
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["spec"]["groups"]
    for g in groups:
        if interval:
            g["interval"] = interval
        for r in g["rules"]:
            if for_value and "alert" in r:
                r["for"] = for_value
    return groups


def write_rule_file(path: Path, for_value: str | None = None, interval: str | None = None) -> Path:
    path.write_text(yaml.safe_dump({"groups": rule_groups(for_value, interval)}), encoding="utf-8")
    return path


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel or variable, PromQL) for every query of the dashboard, variables substituted.
    A template variable's `label_values(SELECTOR, label)` becomes SELECTOR."""
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    out = []
    for panel in dash["panels"]:
        for t in panel.get("targets", []):
            out.append((f'{panel["title"]} [{t["refId"]}]', t["expr"]))
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", var["query"]["query"])
            assert m, var
            out.append((f'variable {var["name"]}', m.group(1)))

    def subst(expr: str) -> str:
        for k, v in DASHBOARD_VARS.items():
            expr = expr.replace(k, v)
        return expr

    return [(name, subst(e)) for name, e in out]


class Prometheus:
    def __init__(self, workdir: Path, target: str, rule_file: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rule_file)],
            "scrape_configs": [{"job_name": "ferroserve", "static_configs": [{"targets": [target]}]}],
        }
        cfg = workdir / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.log_path = workdir / "prometheus.log"
        binary = shutil.which("prometheus")
        assert binary, "prometheus is not installed: run scripts/setup-test-env.sh"
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={cfg}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            assert self.process.poll() is None, self.log_path.read_text()
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "prometheus never became ready"
            time.sleep(0.2)

    def api(self, path: str, **params) -> dict:
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:
            return json.load(e)

    def query(self, expr: str) -> dict:
        return self.api("query", query=expr)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


class Load:
    """Threads sending requests until stopped: `body` to each URL, and every `bad_every`-th
    request one that the router refuses (invalid_argument, with the version's label)."""

    def __init__(self, urls_bodies: list[tuple[str, dict]], bad: tuple[str, dict] | None, bad_every=10):
        import requests

        self.stop_flag = threading.Event()
        self.sent = 0
        self.threads = []
        for url, body in urls_bodies:
            def run(url=url, body=body):
                s = requests.Session()
                n = 0
                while not self.stop_flag.is_set():
                    n += 1
                    try:
                        if bad and n % bad_every == 0:
                            s.post(bad[0], json=bad[1], timeout=5)
                        else:
                            s.post(url, json=body, timeout=5)
                        self.sent += 1
                    except requests.RequestException:
                        time.sleep(0.01)

            t = threading.Thread(target=run, daemon=True)
            t.start()
            self.threads.append(t)

    def stop(self) -> None:
        self.stop_flag.set()
        for t in self.threads:
            t.join(timeout=10)


def poll(what: str, probe, done, timeout_s: float = 60.0, period_s: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while True:
        got = probe()
        if done(got):
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: last {json.dumps(got)[:2000]}")
        time.sleep(period_s)
