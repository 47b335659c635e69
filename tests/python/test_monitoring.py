"""k8s/monitoring/ proven on a real Prometheus: it scrapes a ferroserve under load (two models,
one with a shadow version and a progressive rollout running), every query of the Grafana
dashboard and every rule expression returns data without error, `promtool check rules` passes,
and unloading a model under load fires FerroserveVersionUnavailable in Prometheus's alerts API.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO_ROOT, _stop, load_reference, read_log, start_server
from monitoring import FOR_IN_TEST, INTERVAL_IN_TEST, Load, Prometheus, dashboard_queries, poll, rule_groups, write_rule_file

TOKEN = "monitoring-test-admin-token"


def _repo(root: Path) -> Path:
    repo = root / "models"
    mlp = repo / "mlp"
    for v in ("1", "2", "3"):
        (mlp / v).mkdir(parents=True)
        shutil.copy(REPO_ROOT / "models" / "mlp" / "1" / "model.onnx", mlp / v / "model.onnx")
    config = (REPO_ROOT / "models" / "mlp" / "config.toml").read_text()
    config += '\nversion_policy = "all"\n[traffic]\nweights = { "1" = 100 }\nshadow = { version = "3", percent = 100 }\n'
    (mlp / "config.toml").write_text(config)
    shutil.copytree(REPO_ROOT / "models" / "iris", repo / "iris")
    return repo


def _post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def _inputs(model: str) -> dict:
    ref = load_reference(model)
    return {"inputs": [{"name": n, **t} for n, t in ref["inputs"].items()]}


@pytest.fixture(scope="module")
def stack():
    work = Path(tempfile.mkdtemp(prefix="ferroserve-monitoring-"))
    repo = _repo(work)
    server = start_server(
        work / "server.log",
        env_overrides={
            "FERROSERVE_ADMIN_TOKEN": TOKEN,
            "FERROSERVE_MODEL_CONTROL_MODE": "explicit",
            "FERROSERVE_LOAD_MODELS": "mlp,iris",
        },
        repository=repo,
    )
    http = f"http://{server.http_url}"
    status, body = _post(
        f"{http}/v2/models/mlp/rollout",
        # Long steps and a request count never reached: it stays running at step 1.
        {"candidate": "2", "stable": "1", "steps": [50, 100], "step_duration_s": 3600, "min_requests": 1_000_000_000},
    )
    assert status == 200, body
    bad = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}
    load = Load(
        [
            (f"{http}/v2/models/mlp/infer", _inputs("mlp")),
            (f"{http}/v2/models/mlp/infer", _inputs("mlp")),
            (f"{http}/v2/models/iris/infer", _inputs("iris")),
        ],
        bad=(f"{http}/v2/models/mlp/infer", bad),
    )
    rules = write_rule_file(work / "rules.yml", FOR_IN_TEST, INTERVAL_IN_TEST)
    prom = Prometheus(work, server.metrics_url, rules)
    try:
        poll(
            "Prometheus never saw request rates",
            lambda: prom.query('sum by (model) (rate(ferroserve_requests_total{code="ok"}[15s]))'),
            lambda r: len(r["data"]["result"]) == 2,
        )
        yield {"prom": prom, "http": http, "work": work, "server": server}
    finally:
        load.stop()
        prom.stop()
        _stop(server.process)
        assert "panicked" not in read_log(server.log_path)
        shutil.rmtree(work, ignore_errors=True)


def _has_data(result: dict) -> bool:
    return result.get("status") == "success" and len(result["data"]["result"]) > 0


def test_every_dashboard_query_returns_data_from_a_server_under_load(stack):
    prom = stack["prom"]
    queries = dashboard_queries()
    assert len(queries) >= 25, queries
    for name, expr in queries:
        result = poll(f"{name}: {expr}", lambda: prom.query(expr), _has_data, timeout_s=45)
        assert result["status"] == "success"


def test_every_recording_rule_returns_data_and_every_alert_evaluates(stack):
    prom = stack["prom"]
    rules = [r for g in rule_groups() for r in g["rules"]]
    assert sum("alert" in r for r in rules) == 6
    for r in rules:
        if "alert" in r:
            assert r["annotations"].get("runbook"), f"{r['alert']} has no runbook"
            result = prom.query(r["expr"])
            assert result["status"] == "success", (r["alert"], result)
        else:
            poll(f"{r['record']}: {r['expr']}", lambda: prom.query(r["expr"]), _has_data, timeout_s=45)
            # And Prometheus itself evaluates it into the recorded series.
            poll(f"recorded {r['record']}", lambda: prom.query(r["record"]), _has_data, timeout_s=45)
    groups = prom.api("rules")["data"]["groups"]
    unhealthy = [(r["name"], r.get("lastError")) for g in groups for r in g["rules"] if r["health"] != "ok"]
    assert not unhealthy, unhealthy


def test_promtool_accepts_the_rules_as_shipped_and_as_rendered_for_the_test(stack):
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not installed: run scripts/setup-test-env.sh"
    for name, for_value in (("shipped.yml", None), ("rendered.yml", FOR_IN_TEST)):
        path = write_rule_file(stack["work"] / name, for_value)
        out = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "SUCCESS: 12 rules found" in out.stdout, out.stdout


def test_unloading_a_model_under_load_fires_version_unavailable(stack):
    prom = stack["prom"]
    # Healthy first: the alert is not firing, and its input says 0 for iris.
    alerts = prom.api("alerts")["data"]["alerts"]
    assert not [a for a in alerts if a["labels"]["alertname"] == "FerroserveVersionUnavailable"], alerts
    status, body = _post(f"{stack['http']}/v2/repository/models/iris/unload", {})
    assert status == 200, body

    def firing(result):
        return [
            a
            for a in result["data"]["alerts"]
            if a["labels"]["alertname"] == "FerroserveVersionUnavailable" and a["state"] == "firing"
        ]

    result = poll("FerroserveVersionUnavailable never fired", lambda: prom.api("alerts"), firing, timeout_s=60)
    [alert] = firing(result)
    assert alert["labels"]["model"] == "iris" and alert["labels"]["version"] == "1", alert
    assert alert["labels"]["severity"] == "critical"
    assert "repository/index" in alert["annotations"]["runbook"]
    # The rules API reports the same rule firing.
    rules = [r for g in prom.api("rules")["data"]["groups"] for r in g["rules"]]
    [rule] = [r for r in rules if r["name"] == "FerroserveVersionUnavailable"]
    assert rule["state"] == "firing", rule
