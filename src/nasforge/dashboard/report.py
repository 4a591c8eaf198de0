"""``nasforge report RUN_DIR``: one self-contained HTML file of a run.

The same figures as the dashboard's run page (:mod:`nasforge.dashboard.plots`), their
JSON embedded and plotly.js inlined from the installed package, so the file opens
offline, attached to a mail or years later.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

from nasforge.dashboard import data as D
from nasforge.dashboard import plots as P
from nasforge.dashboard.svg import arch_svg


def _num(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return escape(str(v))


def render(run_dir: str | Path) -> str:
    """The report's HTML text."""
    run = Path(run_dir)
    if not (run / D.DB_NAME).is_file():
        raise D.NotFound(f"{run} is not a nasforge run (no {D.DB_NAME} in it)")
    data = D.run_data(run)
    summ = D.summary(run.parent, run)
    figs = P.run_figures(data)
    top = D.trials_page(run, sort=data["metric"], desc=data["mode"] == "max", limit=20)
    best = D.best_arch(run)
    parts = [f"<h1>nasforge run {escape(run.name)}</h1>",
             f"<p>{escape(str(summ['task']))} on {escape(str(summ['dataset']))} · space "
             f"{escape(str(summ['space']))} · strategy {escape(str(summ['strategy']))} · "
             f"estimator {escape(str(summ['estimator']))} · status {escape(summ['status'])} · "
             f"{summ['trials']} trials · best {escape(data['metric'])} {_num(summ['best'])}</p>"]
    parts += [f"<div id='fig-{n}' class='plot'></div>" for n in figs]
    final = data.get("final") or {}
    if final.get("metrics"):
        parts.append("<h2>Final model</h2><table>" + "".join(
            f"<tr><th>{escape(k)}</th><td>{_num(v)}</td></tr>"
            for k, v in final["metrics"].items()) + "</table>")
    if best is not None:
        drawing = arch_svg(best["arch"], best["arch_json"])
        parts.append(f"<h2>Best architecture (trial {best['id']})</h2><p><code>"
                     f"{escape(best['arch'])}</code></p>{drawing}")
    cols = [c for c in top["metrics"] if c not in ("epochs", "data_fraction")]
    parts.append(f"<h2>Top {len(top['rows'])} trials by {escape(data['metric'])}</h2><table>"
                 "<tr><th>id</th><th>status</th>" + "".join(f"<th>{escape(c)}</th>" for c in cols)
                 + "<th>arch</th></tr>" + "".join(
                     f"<tr><td>{r['id']}</td><td>{r['status']}</td>" + "".join(
                         f"<td>{_num(r['metrics'].get(c, '-'))}</td>" for c in cols)
                     + f"<td><code>{escape(r['arch'])}</code></td></tr>" for r in top["rows"])
                 + "</table>")
    js = Path(P.plotly_js_path()).read_text(encoding="utf-8").replace("</script", "<\\/script")
    figs_json = json.dumps(D._clean(figs)).replace("<", "\\u003c")  # noqa: SLF001
    return ("<!doctype html><html><head><meta charset='utf-8'><title>nasforge report "
            f"{escape(run.name)}</title><style>body{{font-family:sans-serif;margin:16px}}"
            "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;"
            "padding:2px 6px;text-align:left}.plot{width:720px;display:inline-block}"
            "code{font-size:11px}</style>"
            f"<script>{js}</script></head><body>"
            + "".join(parts)
            + f"<script>const FIGS={figs_json};for(const[n,f]of Object.entries(FIGS))"
            "Plotly.newPlot('fig-'+n,f.data,f.layout,{displaylogo:false});</script>"
            "</body></html>")


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the report (default ``RUN_DIR/report.html``) and return its path."""
    path = Path(out) if out is not None else Path(run_dir) / "report.html"
    path.write_text(render(run_dir), encoding="utf-8")
    return path
