"""Plotly figures (plain JSON dicts) of a run, shared by the dashboard and the report.

Plain dicts rather than ``plotly.graph_objects``: the browser's plotly.js draws them,
and the report embeds the very same JSON, so both show one picture.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

_LAYOUT = {"margin": {"l": 60, "r": 20, "t": 40, "b": 50}, "height": 340,
           "template": None, "hovermode": "closest"}


def plotly_js_path() -> str:
    """The plotly.js bundled inside the installed ``plotly`` package (served, never a CDN)."""
    import plotly

    return os.path.join(os.path.dirname(plotly.__file__), "package_data", "plotly.min.js")


def _layout(title: str, x: str, y: str, **more: Any) -> dict[str, Any]:
    return {**_LAYOUT, "title": {"text": title}, "xaxis": {"title": {"text": x}},
            "yaxis": {"title": {"text": y}}, **more}


def best_so_far(data: Mapping[str, Any], by: str = "n", name: str = "") -> list[dict[str, Any]]:
    """Traces: each trial's value and the best so far, against trials (``n``) or time (``t``)."""
    c = data["curve"]
    x = c[by]
    pre = f"{name}: " if name else ""
    return [
        {"type": "scatter", "mode": "markers", "x": x, "y": c["value"], "name": pre + "trial",
         "text": [f"trial {i}" for i in c["id"]], "marker": {"size": 5, "opacity": 0.5}},
        {"type": "scatter", "mode": "lines", "line": {"shape": "hv", "width": 2}, "x": x,
         "y": c["best"], "name": pre + "best so far"},
    ]


def curve_figures(data: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    m = f"{data['metric']} ({data['mode']})"
    return {
        "best_trials": {"data": best_so_far(data, "n"),
                        "layout": _layout("Best so far vs trials", "trials finished", m)},
        "best_time": {"data": best_so_far(data, "t"),
                      "layout": _layout("Best so far vs time", "seconds since start", m)},
    }


def pareto_figure(data: Mapping[str, Any]) -> dict[str, Any] | None:
    p = data.get("pareto")
    if not p or not p["points"]:
        return None
    traces = []
    for front in (False, True):
        pts = [q for q in p["points"] if q["front"] is front]
        pts.sort(key=lambda q: q["x"])
        traces.append({
            "type": "scatter", "mode": "lines+markers" if front else "markers",
            "name": "Pareto front" if front else "other trials",
            "x": [q["x"] for q in pts], "y": [q["y"] for q in pts],
            "text": [f"trial {q['id']}<br>{q['arch']}" for q in pts],
            "hovertemplate": "%{text}<br>%{x}, %{y}<extra></extra>",
            "marker": {"size": 8 if front else 5, "color": "#d62728" if front else "#7f7f7f"},
            "line": {"shape": "hv"},
        })
    return {"data": traces, "layout": _layout("Pareto front", p["x"], p["y"])}


def importance_figure(data: Mapping[str, Any]) -> dict[str, Any] | None:
    imp = list(data.get("importance") or [])
    if not imp:
        return None
    imp = imp[::-1]
    return {"data": [{"type": "bar", "orientation": "h", "x": [d["effect"] for d in imp],
                      "y": [d["choice"] for d in imp],
                      "text": [f"best: {d['best_value']}" for d in imp],
                      "hovertemplate": "%{y}: spread %{x:.4f}<br>%{text}<extra></extra>"}],
            "layout": _layout("Which choices matter",
                              f"spread of the mean {data['metric']} over a choice's values", "",
                              height=max(240, 24 * len(imp) + 80),
                              margin={"l": 130, "r": 20, "t": 40, "b": 50})}


def run_figures(data: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """All figures of one run page, by name (absent ones left out)."""
    figs = curve_figures(data)
    for name, fig in (("pareto", pareto_figure(data)), ("importance", importance_figure(data))):
        if fig is not None:
            figs[name] = fig
    return figs


def compare_figures(runs: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Best-so-far curves of several runs overlaid (against trials and against time)."""
    out = {}
    for by, title, x in (("n", "Best so far vs trials", "trials finished"),
                         ("t", "Best so far vs time", "seconds since start")):
        traces = []
        for name, d in runs:
            tr = best_so_far(d, by, name)[1]
            traces.append(tr)
        metric = runs[0][1]["metric"] if runs else ""
        out[f"compare_{by}"] = {"data": traces, "layout": _layout(title, x, metric)}
    return out
