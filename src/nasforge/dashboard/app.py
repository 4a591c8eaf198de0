"""The dashboard's web app: Starlette routes over :mod:`nasforge.dashboard.data`.

Read-only by construction: every route is a GET that opens a run's store read-only.
Pages are small HTML shells; their data comes from ``/api/...`` JSON that the page's
script polls every few seconds while a run is live (polling rather than server-sent
events: a page left open on a finished run then costs nothing, and it works through any
proxy). plotly.js is served from the installed ``plotly`` package, nothing from a CDN.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from nasforge.dashboard import data as D
from nasforge.dashboard import plots as P
from nasforge.dashboard.svg import arch_svg

STATIC = Path(__file__).parent / "static"


def _page(title: str, body: str, boot: dict[str, Any]) -> HTMLResponse:
    return HTMLResponse(
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{escape(title)} - nasforge</title><link rel='icon' href='data:,'>"
        "<link rel='stylesheet' href='/static/style.css'>"
        "<script src='/static/plotly.min.js'></script></head><body>"
        "<header><a href='/'>nasforge dashboard</a> <span id='crumb'>"
        f"{escape(title)}</span></header><main>{body}</main>"
        f"<script id='boot' type='application/json'>{_safe_json(boot)}</script>"
        "<script src='/static/app.js'></script></body></html>")


def _safe_json(obj: Any) -> str:
    return json.dumps(obj).replace("<", "\\u003c")


def _json(obj: Any) -> JSONResponse:
    return JSONResponse(D._clean(obj))  # noqa: SLF001 - NaN is not JSON


def create_app(root: str | Path) -> Starlette:
    """The app over every run under ``root``."""
    root = Path(root)

    def run_of(request: Request) -> Path:
        try:
            return D.resolve_run(root, request.query_params.get("run", ""))
        except D.NotFound:
            raise HTTPException(404, "no such run") from None

    async def index(request: Request) -> Response:
        return _page("runs", "<h1>Runs</h1><p id='root'></p><table id='runs' class='grid'>"
                     "</table><p><button id='compare' disabled>compare selected</button></p>",
                     {"page": "runs", "root": str(root)})

    async def run_page(request: Request) -> Response:
        run = run_of(request)
        name = D.run_name(root, run)
        body = (
            f"<h1>Run {escape(name)}</h1><div id='summary'></div>"
            "<section class='plots'><div id='plot-best_trials' class='plot'></div>"
            "<div id='plot-best_time' class='plot'></div><div id='plot-pareto' class='plot'>"
            "</div><div id='plot-importance' class='plot'></div></section>"
            "<h2>Final model</h2><div id='final'>none yet</div>"
            "<h2>Trials</h2><div class='filters'><input id='q' placeholder='filter arch'>"
            "<select id='status'><option value=''>any status</option><option>ok</option>"
            "<option>failed</option><option>running</option></select>"
            "<span id='count'></span> <button id='prev'>&lt;</button>"
            "<button id='next'>&gt;</button></div>"
            "<table id='trials' class='grid'></table><h2>Trial</h2><div id='detail'>"
            "click a row</div>")
        return _page(name, body, {"page": "run", "run": name})

    async def compare_page(request: Request) -> Response:
        names = [n for n in request.query_params.getlist("run") if n]
        for n in names:
            try:
                D.resolve_run(root, n)
            except D.NotFound:
                raise HTTPException(404, "no such run") from None
        body = ("<h1>Compare</h1><section class='plots'><div id='plot-compare_n' class='plot'>"
                "</div><div id='plot-compare_t' class='plot'></div></section>"
                "<h2>Best architectures</h2><div id='archs' class='side'></div>")
        return _page("compare", body, {"page": "compare", "runs": names})

    async def api_runs(request: Request) -> Response:
        return _json({"root": str(root), "runs": D.list_runs(root)})

    async def api_run(request: Request) -> Response:
        run = run_of(request)
        data = D.run_data(run)
        summ = D.summary(root, run)
        return _json({"summary": summ, "figures": P.run_figures(data), "final": data["final"],
                      "importance": data["importance"]})

    async def api_trials(request: Request) -> Response:
        run = run_of(request)
        qp = request.query_params
        try:
            page = D.trials_page(run, sort=qp.get("sort", "id"), desc=qp.get("desc") == "1",
                                 q=qp.get("q", ""), status=qp.get("status", ""),
                                 offset=int(qp.get("offset", 0)), limit=int(qp.get("limit", 50)))
        except ValueError:
            raise HTTPException(400, "offset and limit are numbers") from None
        except D.NotFound as e:
            raise HTTPException(400, str(e)) from None
        return _json(page)

    async def api_trial(request: Request) -> Response:
        run = run_of(request)
        try:
            t = D.trial_detail(run, int(request.query_params.get("id", "")))
        except (ValueError, D.NotFound):
            raise HTTPException(404, "no such trial") from None
        t["svg"] = arch_svg(t["arch"], t.get("arch_json"))
        return _json(t)

    async def api_compare(request: Request) -> Response:
        runs, archs = [], []
        for n in request.query_params.getlist("run"):
            try:
                run = D.resolve_run(root, n)
            except D.NotFound:
                raise HTTPException(404, "no such run") from None
            runs.append((n, D.run_data(run)))
            b = D.best_arch(run)
            if b is not None:
                b["svg"] = arch_svg(b["arch"], b.get("arch_json"))
            archs.append({"run": n, "best": b})
        return _json({"figures": P.compare_figures(runs), "archs": archs})

    async def svg(request: Request) -> Response:
        run = run_of(request)
        try:
            t = D.trial_detail(run, int(request.query_params.get("id", "")))
        except (ValueError, D.NotFound):
            raise HTTPException(404, "no such trial") from None
        return Response(arch_svg(t["arch"], t.get("arch_json")), media_type="image/svg+xml")

    async def files(request: Request) -> Response:
        run = run_of(request)
        try:
            p = D.resolve_file(run, request.query_params.get("path", ""))
        except D.NotFound:
            raise HTTPException(404, "no such file") from None
        return FileResponse(p, filename=p.name)

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name == "plotly.min.js":
            return FileResponse(P.plotly_js_path(), media_type="text/javascript")
        if name not in ("app.js", "style.css"):
            raise HTTPException(404)
        return FileResponse(STATIC / name)

    return Starlette(routes=[
        Route("/", index), Route("/run", run_page), Route("/compare", compare_page),
        Route("/api/runs", api_runs), Route("/api/run", api_run),
        Route("/api/trials", api_trials), Route("/api/trial", api_trial),
        Route("/api/compare", api_compare), Route("/svg", svg), Route("/file", files),
        Route("/static/{name}", static),
    ])
