"""How fast the dashboard answers on big runs: the trials endpoint and the run page's data.

Makes runs of 1,000 / 10,000 / 50,000 trials (inserted straight into the store's SQLite
file, with a realistic 60-choice ``arch_json`` per trial), then times the JSON endpoints
through Starlette's test client (no network), median of 5 calls each.
Writes ``benchmarks/results/dashboard.md``. Run: ``python benchmarks/dashboard.py``.
"""

from __future__ import annotations

import json
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from starlette.testclient import TestClient

from nasforge.dashboard.app import create_app
from nasforge.store import RunStore

SIZES = (1_000, 10_000, 50_000)
QUERIES = {
    "first page (id order)": {},
    "sorted by val_accuracy": {"sort": "val_accuracy", "desc": "1"},
    "filter 'w48' + sort by flops": {"q": "w48", "sort": "flops"},
    "last page": {"offset": "-50"},
}


def make(path: Path, n: int) -> None:
    RunStore.create(path, {"space": {"name": "cnn"}, "strategy": {
        "name": "evolution", "options": {"metric": "val_accuracy", "mode": "max"}}}).close()
    rows = []
    for i in range(n):
        arch = f"stem{8 * (i % 7 + 1)}|conv-k{3 + 2 * (i % 3)}-w{16 * (i % 11 + 1)}-relu"
        m = {"val_accuracy": (i * 7919 % 10007) / 10007, "params": float(i), "flops": 2.0 * i,
             "latency_ms": 0.1, "val_loss": 1.0}
        choices = {f"c{j}": (i >> (j % 20)) & 3 for j in range(60)}
        rows.append((arch, json.dumps({"arch": arch, "choices": choices}), "ok", json.dumps(m),
                     1.0, float(i), float(i) + 0.5, i + 1))
    with sqlite3.connect(path / "nasforge.db") as c:
        c.executemany("INSERT INTO trials (arch, arch_json, status, metrics, cost, started_at, "
                      "finished_at, told) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)


def timed(client: TestClient, url: str, params: dict[str, str], reps: int = 5) -> float:
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        r = client.get(url, params=params)
        out.append(time.perf_counter() - t0)
        assert r.status_code == 200, r.text
    return statistics.median(out)


def main() -> None:
    lines = ["# Dashboard response times", "",
             f"{platform.processor() or platform.machine()}, Python {sys.version.split()[0]}; "
             "the machine was shared with other jobs (2 cores, several engineers), so these "
             "are upper bounds. Median of 5 calls through Starlette's test client (no "
             "network), in milliseconds (the first /api/run call: one call). Page size 50; pinned "
             "to one core (taskset -c 1).", "",
             "| trials | " + " | ".join(QUERIES) + " | /api/run (plots), first | /api/run, "
             "unchanged store | /api/runs |",
             "|---|" + "---|" * (len(QUERIES) + 3)]
    with tempfile.TemporaryDirectory() as d:
        for n in SIZES:
            root = Path(d) / f"r{n}"
            make(root / "run", n)
            c = TestClient(create_app(root))
            cells = []
            for params in QUERIES.values():
                p = {"run": "run", "limit": "50", **params}
                if p.get("offset") == "-50":
                    p["offset"] = str(n - 50)
                cells.append(timed(c, "/api/trials", p))
            cells.append(timed(c, "/api/run", {"run": "run"}, reps=1))
            cells.append(timed(c, "/api/run", {"run": "run"}, reps=3))
            cells.append(timed(c, "/api/runs", {}))
            lines.append(f"| {n:,} | " + " | ".join(f"{1000 * s:.0f}" for s in cells) + " |")
            print(lines[-1], flush=True)
    lines += ["", "The trials table pages in SQL (`json_extract` on the stored metrics), so "
              "its cost grows with the rows it sorts, not with the architectures it would "
              "parse. `/api/run` (the plots: best-so-far curves and the choice effects) reads "
              "every trial the first time and whenever the store changed (a live run: each new "
              "trial); the page polls it every 2 s, and an unchanged store answers from a cache."]
    out = Path(__file__).parent / "results" / "dashboard.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
