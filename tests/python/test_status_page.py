"""The status page (`GET /status`) in headless Chromium: it lists the served models and their
versions, its charts update as requests are answered, a progressive rollout's step and verdict
move on the page as the rollout runs, and the page logs no console error. The server's admin
API stays closed to the page (a token is set; the page sends none). The screenshot it leaves
for people is target/status-page.png."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from cdp import Browser
from conftest import REPO_ROOT, _stop, load_reference, read_log, start_server
from monitoring import Load, poll

TOKEN = "status-page-test-admin-token"
SCREENSHOT = REPO_ROOT / "target" / "status-page.png"


def _repo(root: Path) -> Path:
    repo = root / "models"
    for v in ("1", "2"):
        (repo / "mlp" / v).mkdir(parents=True)
        shutil.copy(REPO_ROOT / "models" / "mlp" / "1" / "model.onnx", repo / "mlp" / v / "model.onnx")
    config = (REPO_ROOT / "models" / "mlp" / "config.toml").read_text() + '\nversion_policy = "all"\n'
    (repo / "mlp" / "config.toml").write_text(config)
    shutil.copytree(REPO_ROOT / "models" / "iris", repo / "iris")
    return repo


def _inputs(model: str) -> dict:
    ref = load_reference(model)
    return {"inputs": [{"name": n, **t} for n, t in ref["inputs"].items()]}


@pytest.fixture(scope="module")
def page():
    work = Path(tempfile.mkdtemp(prefix="ferroserve-status-"))
    server = start_server(work / "server.log", env_overrides={"FERROSERVE_ADMIN_TOKEN": TOKEN}, repository=_repo(work))
    http = f"http://{server.http_url}"
    load = Load([(f"{http}/v2/models/mlp/infer", _inputs("mlp")), (f"{http}/v2/models/iris/infer", _inputs("iris"))], bad=None)
    browser = Browser()
    try:
        browser.navigate(f"{http}/status?interval_ms=300")
        poll("the page never polled", lambda: browser.eval("Number((document.body && document.body.dataset.polls) || 0)"), lambda n: n >= 1)
        yield {"browser": browser, "http": http}
    finally:
        load.stop()
        browser.close()
        _stop(server.process)
        assert "panicked" not in read_log(server.log_path)
        shutil.rmtree(work, ignore_errors=True)


ROWS = """[...document.querySelectorAll('section.model')].map(s => ({
  model: s.dataset.model,
  versions: [...s.querySelectorAll('tbody tr')].map(r => [...r.children].slice(0, 6).map(c => c.textContent)),
}))"""


def test_the_page_lists_every_model_and_version_with_state_engine_and_batching(page):
    rows = page["browser"].eval(ROWS)
    assert [m["model"] for m in rows] == ["iris", "mlp"], rows
    mlp = rows[1]["versions"]
    assert [r[0] for r in mlp] == ["v1", "v2"], mlp
    for r in mlp:
        assert r[1] == "READY" and r[2] == "tract", r
        assert r[3].endswith(" ms") and float(r[3].split()[0]) >= 0, r
        assert r[4].startswith("max 64 rows"), r
        assert r[5] == "1", r
    title = page["browser"].eval("document.title")
    assert title == "ferroserve status"
    links = page["browser"].eval("[...document.querySelectorAll('nav a')].map(a => a.getAttribute('href'))")
    assert links[1:] == ["/v2/models/stats", "#index", "/v2"], links
    assert links[0].endswith("/metrics"), links


def test_the_charts_update_as_requests_are_answered(page):
    b = page["browser"]
    points = "Number(document.querySelector('[data-model=\"iris\"] tbody tr svg.chart.rate').dataset.points)"
    first = b.eval(points)
    later = poll("the rate chart never grew", lambda: b.eval(points), lambda n: n >= first + 3, timeout_s=30)
    assert later >= first + 3
    assert b.eval("document.querySelectorAll('[data-model=\"iris\"] svg.chart.rate polyline').length") == 1
    rate = poll(
        "the request rate never showed",
        lambda: b.eval("document.querySelector('[data-model=\"iris\"] td.rate').textContent"),
        lambda t: t not in ("–", "") and float(t) > 0,
    )
    assert float(rate) > 0


def test_a_rollout_is_shown_step_by_step_until_promoted(page):
    b = page["browser"]
    req = urllib.request.Request(
        f"{page['http']}/v2/models/mlp/rollout",
        data=json.dumps(
            {"candidate": "2", "stable": "1", "steps": [50, 100], "step_duration_s": 1.5, "min_requests": 5,
             "max_p99_ratio": 1000, "max_error_rate_increase": 1.0}
        ).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200
    seen = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        box = b.eval(
            """(() => { const r = document.querySelector('[data-model="mlp"] .rollout');
                 return r && [r.dataset.rolloutState, Number(r.dataset.rolloutStep), r.textContent]; })()"""
        )
        if box and (not seen or seen[-1][:2] != box[:2]):
            seen.append(box)
        if box and box[0] == "promoted":
            break
        time.sleep(0.1)
    states = [s[:2] for s in seen]
    assert ["running", 1] in states and ["running", 2] in states and states[-1][0] == "promoted", seen
    text = seen[-1][2]
    assert "v1 → v2" in text and "step 2 of 2" in text and "verdict" in text, text
    assert "candidate window:" in seen[0][2] and "stable window:" in seen[0][2], seen[0]
    split = b.eval("[...document.querySelectorAll('[data-model=\"mlp\"] .split span')].map(s => s.textContent)")
    assert split == ["v2 100%"], split
    b.screenshot(SCREENSHOT)
    assert SCREENSHOT.stat().st_size > 10_000


def test_the_page_logs_no_console_error(page):
    b = page["browser"]
    # The index link works without a token (a read).
    b.eval("document.getElementById('link-index').click()")
    body = poll("the index never showed", lambda: b.eval("document.getElementById('index-body').textContent"), lambda t: "READY" in t)
    assert '"mlp"' in body
    assert b.errors() == []
