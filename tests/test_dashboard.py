"""The dashboard's data access, routes, drawings and the HTML report (no browser).

Runs are made directly in the store (fast, no training): what the dashboard reads is
the store, so that is what these tests control.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="needs the dashboard extra (nasforge[dashboard])")
pytest.importorskip("httpx", reason="Starlette's TestClient needs httpx (nasforge[dashboard])")
from starlette.testclient import TestClient  # noqa: E402

from nasforge.dashboard import data as D  # noqa: E402
from nasforge.dashboard.app import create_app  # noqa: E402
from nasforge.dashboard.plots import plotly_js_path  # noqa: E402
from nasforge.dashboard.report import render, write_report  # noqa: E402
from nasforge.dashboard.svg import arch_svg  # noqa: E402
from nasforge.estimators.base import Result  # noqa: E402
from nasforge.store import RunStore  # noqa: E402

NB201 = {"1<-0": "nor_conv_3x3", "2<-0": "skip_connect", "2<-1": "avg_pool_3x3",
         "3<-0": "none", "3<-1": "nor_conv_1x1", "3<-2": "skip_connect"}


def _config(objectives=None) -> dict:
    return {"space": {"name": "cnn", "options": {}}, "dataset": {"name": "digits"},
            "strategy": {"name": "evolution", "options": {"metric": "val_accuracy",
                                                          "mode": "max"}},
            "estimator": {"name": "train", "options": {}}, "objectives": objectives}


def make_run(path: Path, n: int = 5, status: str = "finished", objectives=None,
             keep_open: bool = False) -> RunStore | None:
    """A run of ``n`` trials through the store's own API (the last one failed)."""
    store = RunStore.create(path, _config(objectives))
    for i in range(n):
        arch = f"stem16|conv-k3-w{16 * (i % 3 + 1)}-relu|maxpool"
        tid = store.start_trial(arch, {"arch": arch, "choices": {"w": 16 * (i % 3 + 1),
                                                                 "k": i % 2}},
                                {"epochs": 1}, {}, i)
        if i == n - 1 and n > 2:
            res = Result.failed("RuntimeError: out of memory\ntraceback line")
        else:
            res = Result(metrics={"val_accuracy": 0.5 + 0.1 * (i % 4), "params": 1000.0 * (i + 1),
                                  "latency_ms": 0.1 * (5 - i)}, cost=1.0)
        store.finish_trial(tid, res, {}, i + 1)
    store.set_meta(status=status, elapsed_s=12.5)
    if keep_open:
        return store
    store.close()
    return None


def bulk_run(path: Path, n: int) -> None:
    """A run of ``n`` ok trials inserted in one transaction (seconds for 10,000)."""
    make_run(path, 0)
    conn = sqlite3.connect(path / "nasforge.db")
    rows = []
    for i in range(n):
        arch = f"stem{8 * (i % 7 + 1)}|conv-k{3 + 2 * (i % 3)}-w{16 * (i % 11 + 1)}-relu"
        m = {"val_accuracy": (i * 7919 % 10007) / 10007, "params": float(i), "flops": 2.0 * i}
        choices = {f"c{j}": (i >> j) & 3 for j in range(30)}  # a realistic, large arch_json
        rows.append((arch, json.dumps({"arch": arch, "choices": choices}), "ok",
                     json.dumps(m), 1.0, float(i), float(i) + 0.5, i + 1))
    conn.executemany("INSERT INTO trials (arch, arch_json, status, metrics, cost, started_at, "
                     "finished_at, told) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    conn.commit()
    conn.close()


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    make_run(tmp_path / "a", 6)
    make_run(tmp_path / "group" / "b", 4, status="running")  # no writer: interrupted
    make_run(tmp_path / "mo", 6, objectives=["val_accuracy:max", "latency_ms:min"])
    (tmp_path / "secret.txt").write_text("not a run file")
    return tmp_path


@pytest.fixture
def client(runs: Path) -> TestClient:
    return TestClient(create_app(runs))


def test_lists_every_run_with_status_from_the_lock(runs: Path, tmp_path: Path) -> None:
    live = make_run(tmp_path / "live", 3, status="running", keep_open=True)
    try:
        got = {r["name"]: r for r in D.list_runs(runs)}
        assert set(got) == {"a", "group/b", "mo", "live"}
        assert got["live"]["status"] == "running"  # its writer holds the lock
        assert got["group/b"]["status"] == "interrupted"  # stored "running", no writer
        assert got["a"]["status"] == "finished"
        assert got["a"]["trials"] == 6 and got["a"]["counts"]["failed"] == 1
        assert got["a"]["best"] == pytest.approx(0.8)
        assert got["a"]["space"] == "cnn" and got["a"]["elapsed_s"] == 12.5
    finally:
        assert live is not None
        live.close()
    assert {r["name"]: r for r in D.list_runs(runs)}["live"]["status"] == "interrupted"


def test_a_stale_lock_is_not_running(tmp_path: Path) -> None:
    make_run(tmp_path / "r", 2, status="running")
    (tmp_path / "r" / "nasforge.lock").write_text(json.dumps({"pid": 2**22 + 12345,
                                                              "host": __import__("socket")
                                                              .gethostname()}))
    assert D.summary(tmp_path, tmp_path / "r")["status"] == "interrupted"


def test_trials_sorted_filtered_paged(client: TestClient) -> None:
    r = client.get("/api/trials", params={"run": "a", "sort": "val_accuracy", "desc": "1",
                                          "limit": 3})
    assert r.status_code == 200
    d = r.json()
    assert d["total"] == 6 and len(d["rows"]) == 3
    vals = [row["metrics"]["val_accuracy"] for row in d["rows"]]
    assert vals == sorted(vals, reverse=True) and vals[0] == pytest.approx(0.8)
    d2 = client.get("/api/trials", params={"run": "a", "offset": 3, "limit": 3}).json()
    assert [row["id"] for row in d2["rows"]] == [4, 5, 6]
    f = client.get("/api/trials", params={"run": "a", "q": "W48"}).json()
    assert f["total"] == 2 and all("w48" in row["arch"] for row in f["rows"])
    assert f["all"] == 6
    failed = client.get("/api/trials", params={"run": "a", "status": "failed"}).json()
    assert [row["id"] for row in failed["rows"]] == [6]
    assert failed["rows"][0]["error"] == "RuntimeError: out of memory"
    # a failed trial lacks the metric: it sorts last either way
    asc = client.get("/api/trials", params={"run": "a", "sort": "val_accuracy"}).json()
    assert asc["rows"][-1]["id"] == 6
    assert client.get("/api/trials", params={"run": "a", "status": "bogus"}).status_code == 400


def test_10k_trials_page_in_about_a_second(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    bulk_run(tmp_path / "big", 10_000)
    made = time.perf_counter() - t0
    c = TestClient(create_app(tmp_path))
    for params in ({}, {"sort": "val_accuracy", "desc": "1"}, {"q": "w48", "sort": "flops"},
                   {"offset": 9_950}):
        t0 = time.perf_counter()
        r = c.get("/api/trials", params={"run": "big", "limit": 50, **params})
        took = time.perf_counter() - t0
        assert r.status_code == 200 and r.json()["all"] == 10_000
        assert took < 1.5, f"{params}: {took:.2f} s (store made in {made:.1f} s)"
    top = c.get("/api/trials", params={"run": "big", "sort": "val_accuracy", "desc": "1"}).json()
    assert top["rows"][0]["metrics"]["val_accuracy"] == pytest.approx(10006 / 10007)
    t0 = time.perf_counter()
    assert c.get("/api/runs").status_code == 200
    assert time.perf_counter() - t0 < 1.5


def test_run_api_figures_final_and_pareto(client: TestClient) -> None:
    d = client.get("/api/run", params={"run": "a"}).json()
    figs = d["figures"]
    assert {"best_trials", "best_time", "importance"} <= set(figs)
    assert "pareto" not in figs  # one objective
    best = figs["best_trials"]["data"][1]["y"]
    assert best == sorted(best) and best[-1] == pytest.approx(0.8)  # best so far never drops
    assert d["importance"][0]["choice"] in ("w", "k")
    mo = client.get("/api/run", params={"run": "mo"}).json()["figures"]["pareto"]
    front = [t for t in mo["data"] if t["name"] == "Pareto front"][0]
    assert front["x"] and all("stem16" in s for s in front["text"])  # hover shows the arch


def test_trial_detail_and_svg(client: TestClient) -> None:
    t = client.get("/api/trial", params={"run": "a", "id": 6}).json()
    assert t["status"] == "failed" and "traceback line" in t["error"]
    assert t["fidelity"] == {"epochs": 1} and t["svg"].startswith("<svg")
    r = client.get("/svg", params={"run": "a", "id": 1})
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml")
    assert client.get("/api/trial", params={"run": "a", "id": 99}).status_code == 404


def test_pages_and_offline_assets(client: TestClient) -> None:
    for url in ("/", "/run?run=a", "/compare?run=a&run=mo"):
        r = client.get(url)
        assert r.status_code == 200 and "/static/plotly.min.js" in r.text
        assert "http://" not in r.text and "https://" not in r.text  # nothing from a CDN
    js = client.get("/static/plotly.min.js")
    assert js.status_code == 200 and len(js.content) > 1_000_000
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/../data.py").status_code == 404
    assert client.get("/run?run=nope").status_code == 404


def test_compare(client: TestClient) -> None:
    d = client.get("/api/compare", params=[("run", "a"), ("run", "mo")]).json()
    assert len(d["figures"]["compare_n"]["data"]) == 2
    assert [a["run"] for a in d["archs"]] == ["a", "mo"]
    assert all(a["best"]["svg"].startswith("<svg") for a in d["archs"])


@pytest.mark.parametrize("path", [
    "../secret.txt", "../../secret.txt", "/etc/passwd", "nasforge.db/../../secret.txt",
    "%2e%2e/secret.txt", "", "best",
])
def test_file_route_refuses_traversal(client: TestClient, runs: Path, path: str) -> None:
    assert client.get("/file", params={"run": "a", "path": path}).status_code == 404


def test_file_route_serves_the_runs_own_files(client: TestClient, runs: Path) -> None:
    (runs / "a" / "best").mkdir()
    (runs / "a" / "best" / "model.onnx").write_bytes(b"onnx-bytes")
    (runs / "a" / "best" / "out").symlink_to(runs / "secret.txt")
    r = client.get("/file", params={"run": "a", "path": "best/model.onnx"})
    assert r.status_code == 200 and r.content == b"onnx-bytes"
    assert client.get("/file", params={"run": "a", "path": "best/out"}).status_code == 404
    # runs themselves are confined to the runs directory too
    assert client.get("/api/run", params={"run": ".."}).status_code == 404
    assert client.get("/api/trials", params={"run": "../" + runs.name + "/a"}).status_code == 200


def test_svg_shapes() -> None:
    dag = arch_svg("|nor_conv_3x3~0|+|...", {"choices": NB201})
    assert dag.count("<circle") == 4 and "nor_conv_1x1" in dag and ">none<" not in dag
    chain = arch_svg("stem16|conv-k3-w32-relu|maxpool|drop0.1")
    assert chain.count("<rect") == 4 and "maxpool" in chain
    mobile = arch_svg("k5e4-k3e3|k5e6-k5e4-k7e6")
    assert mobile.count("<rect") == 5 and "stage 1" in mobile
    generic = arch_svg("w=3", {"choices": {"width": 3, "depth": 2}})
    assert "width = 3" in generic and "<script" not in arch_svg("<script>x</script>|a")


def test_report_is_self_contained(runs: Path) -> None:
    path = write_report(runs / "mo")
    html = path.read_text()
    assert path == runs / "mo" / "report.html"
    js = Path(plotly_js_path()).read_text().replace("</script", "<\\/script")
    assert js in html  # plotly.js inlined
    own = html.replace(js, "")
    assert "<script src" not in own and "http" not in own.replace("http://www.w3.org", "")
    assert "Plotly.newPlot" in own
    assert "fig-pareto" in html and "fig-best_trials" in html and "<svg" in html
    with pytest.raises(D.NotFound):
        render(runs)  # the runs directory itself is not a run


def test_cli_report_and_dashboard_errors(runs: Path, tmp_path: Path) -> None:
    from nasforge.cli import main

    with pytest.raises(SystemExit) as e:
        main(["report", str(runs / "a"), "--out", str(tmp_path / "r.html")])
    assert e.value.code == 0 and (tmp_path / "r.html").stat().st_size > 1_000_000
    with pytest.raises(SystemExit) as e:
        main(["report", str(tmp_path / "nothing")])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["dashboard", str(tmp_path / "nothing")])
    assert e.value.code == 2


def test_run_data_is_cached_until_the_store_changes(tmp_path: Path) -> None:
    store = make_run(tmp_path / "r", 3, status="running", keep_open=True)
    assert store is not None
    try:
        first = D.run_data(tmp_path / "r")
        assert D.run_data(tmp_path / "r") is first  # unchanged store: the same answer
        tid = store.start_trial("stem8|maxpool", {"arch": "stem8|maxpool"}, None, {}, 3)
        assert D.run_data(tmp_path / "r")["n_trials"] == 4  # a started trial counts
        store.finish_trial(tid, Result(metrics={"val_accuracy": 0.99}), {}, 4)
        again = D.run_data(tmp_path / "r")
        assert again["curve"]["best"][-1] == pytest.approx(0.99)
    finally:
        store.close()


@pytest.mark.parametrize("host", [None, "0.0.0.0"])
def test_cli_dashboard_serves_on_a_free_port(runs: Path, host: str | None) -> None:
    import os
    import re
    import subprocess
    import sys
    import urllib.request

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    cmd = [sys.executable, "-m", "nasforge.cli", "dashboard", str(runs), "--port", "0"]
    p = subprocess.Popen(cmd + (["--host", host] if host else []), env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = p.stdout.readline()  # type: ignore[union-attr]
        m = re.search(r"http://([\d.]+):(\d+)/", line)
        assert m, line
        assert m.group(1) == (host or "127.0.0.1") and int(m.group(2)) > 0
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{m.group(2)}/api/runs",
                                            timeout=5) as r:
                    names = {x["name"] for x in json.load(r)["runs"]}
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert names == {"a", "group/b", "mo"}
    finally:
        p.terminate()
        _, err = p.communicate(timeout=10)
    assert ("warning" in err and "no login" in err) == (host is not None)


def test_darts_cells_are_drawn_as_cells() -> None:
    """A darts architecture (read from its text, not the space's name) is two cell DAGs:
    every edge labelled, the nodes into the output; not a chain of '|' parts."""
    from nasforge.spaces import get as get_space

    space = get_space("darts", C=4, layers=2)
    text = space.format(space.parse("DARTS-V2"))
    svg = arch_svg(text)
    assert "normal cell" in svg and "reduce cell" in svg
    assert svg.count("<circle") == 2 * (2 + 4 + 1)  # two inputs, four nodes, out per cell
    assert svg.count("sep_conv_3x3") == text.count("sep_conv_3x3")
    assert arch_svg("normal=a~0+b~5") != ""  # an input from a later node: another shape
    assert "normal cell" not in arch_svg("normal=a~0+b~5")
