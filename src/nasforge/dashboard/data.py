"""What the dashboard and the report read from run directories: read-only, while a
search may still be writing.

Every read opens the run's SQLite store read-only (WAL: readers never block the
writer) and closes it again, so a page never holds a run open. The trials table is
sorted, filtered and paged *in SQL* (``json_extract`` on the stored metrics), so a run
of 10,000 trials answers a page without parsing every row's architecture.
"""

from __future__ import annotations

import json
import math
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nasforge.errors import NasforgeError, RunDirError
from nasforge.store import DB_NAME, LOCK_NAME, RunStore
from nasforge.store_lock import _pid_alive

#: trial columns the table can sort on besides metrics
BASE_COLUMNS = ("id", "status", "cost", "started_at", "finished_at", "attempt", "arch")
MAX_PAGE = 500


class NotFound(NasforgeError):
    """A run, trial or file that is not there (or not inside the runs directory)."""


# ------------------------------------------------------------------------------- finding
def find_runs(root: Path, max_depth: int = 3) -> list[Path]:
    """Every run directory (one holding ``nasforge.db``) under ``root``, ``root`` included."""
    root = Path(root)
    out: list[Path] = []

    def walk(d: Path, depth: int) -> None:
        if (d / DB_NAME).is_file():
            out.append(d)
            return  # a run's own sub-folders (best/) are not runs
        if depth >= max_depth:
            return
        try:
            kids = sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError:
            return
        for k in kids:
            walk(k, depth + 1)

    if root.is_dir():
        walk(root, 0)
    return out


def resolve_run(root: Path, name: str) -> Path:
    """The run directory ``name`` (relative to ``root``); anything outside it is NotFound."""
    base = Path(root).resolve()
    try:
        run = (base / name).resolve() if name not in ("", ".") else base
    except (OSError, ValueError):
        raise NotFound(f"no run {name!r}") from None
    if not run.is_relative_to(base) or not (run / DB_NAME).is_file():
        raise NotFound(f"no run {name!r}")
    return run


def resolve_file(run: Path, rel: str) -> Path:
    """A file inside the run directory, or NotFound (``..``, absolute paths, symlinks out)."""
    base = run.resolve()
    if not rel or "\x00" in rel:
        raise NotFound("no such file")
    try:
        p = (base / rel).resolve()
    except (OSError, ValueError):
        raise NotFound("no such file") from None
    if not p.is_relative_to(base) or not p.is_file():
        raise NotFound("no such file")
    return p


def run_name(root: Path, run: Path) -> str:
    rel = run.resolve().relative_to(Path(root).resolve()).as_posix()
    return rel or "."


# ------------------------------------------------------------------------------- status
def writer_alive(run: Path) -> bool:
    """Whether the run's lock names a live writer on this host (a search is running).

    The lock file is what keeps two writers apart, so it is also the reliable sign of a
    live search: a crashed search leaves a lock whose pid is gone (stale), and a lock of
    another host cannot be checked, so it counts as alive.
    """
    try:
        doc = json.loads((run / LOCK_NAME).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(doc, dict):
        return False
    if doc.get("host") != socket.gethostname():
        return True
    try:
        return _pid_alive(int(doc.get("pid")))
    except (TypeError, ValueError):
        return False


def run_status(stored: str | None, alive: bool) -> str:
    """running / finished / interrupted (or error) from the stored status and the lock."""
    if alive:
        return "running"
    if stored == "finished":
        return "finished"
    if stored == "error":
        return "error"
    return "interrupted"


def _open(run: Path) -> RunStore:
    try:
        return RunStore.open(run)
    except RunDirError as e:
        raise NotFound(str(e)) from None


def _objective(config: Mapping[str, Any]) -> tuple[str, str, list[Any]]:
    from nasforge import reporting as R

    objs = R.run_objectives(config)
    return objs[0].metric, objs[0].mode, objs


def summary(root: Path, run: Path) -> dict[str, Any]:
    """One row of the runs page."""
    alive = writer_alive(run)
    with _open(run) as store:
        meta = store.meta()
        counts = store.counts()
        config = meta.get("config") or {}
        metric, mode, objs = _objective(config)
        agg = "MAX" if mode == "max" else "MIN"
        rows = store._read(  # noqa: SLF001 - the store's own checked read, one aggregate
            f"SELECT {agg}(CAST(json_extract(metrics, ?) AS REAL)) FROM trials "
            "WHERE status='ok'", (f"$.{_jkey(metric)}",))
        first = store._read("SELECT MIN(started_at), MAX(COALESCE(finished_at, started_at)) "  # noqa: SLF001
                            "FROM trials")
    best = rows[0][0] if rows else None
    name = lambda k: (config.get(k) or {}).get("name")  # noqa: E731
    ds = config.get("dataset") or {}
    final = meta.get("final") if isinstance(meta.get("final"), dict) else {}
    return {
        "name": run_name(root, run),
        "status": run_status(meta.get("status"), alive),
        "stored_status": meta.get("status"),
        "task": config.get("task") or "classification",
        "dataset": ds.get("resolved") or ds.get("name"),
        "space": name("space"), "strategy": name("strategy"), "estimator": name("estimator"),
        "metric": metric, "mode": mode, "objectives": [str(o) for o in objs],
        "best": _finite(best),
        "trials": sum(counts.values()), "counts": counts,
        "elapsed_s": _finite(meta.get("elapsed_s")),
        "created_at": _finite(meta.get("created_at")),
        "last_at": _finite(first[0][1]) if first else None,
        "test_metrics": final.get("metrics") if isinstance(final.get("metrics"), dict) else None,
    }


def list_runs(root: Path) -> list[dict[str, Any]]:
    out = []
    for run in find_runs(root):
        try:
            out.append(summary(root, run))
        except (NotFound, RunDirError) as e:  # a damaged run is listed, not fatal
            out.append({"name": run_name(root, run), "status": "damaged", "error": str(e)})
    return out


# ------------------------------------------------------------------------------- trials
def _jkey(metric: str) -> str:
    """A metric name as a JSON path member (quoted: names may hold dots or dashes)."""
    return '"' + metric.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _finite(v: Any) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def trials_page(run: Path, *, sort: str = "id", desc: bool = False, q: str = "",
                status: str = "", offset: int = 0, limit: int = 50) -> dict[str, Any]:
    """One page of the trials table, sorted and filtered in SQL.

    ``q`` filters on the architecture text (substring, case-insensitive); ``status`` on
    the status; ``sort`` is a base column or a metric name (trials without it last).
    """
    limit = max(1, min(int(limit), MAX_PAGE))
    offset = max(0, int(offset))
    where, args = [], []
    if q:
        where.append("instr(lower(arch), ?) > 0")
        args.append(q.lower())
    if status:
        if status not in ("running", "ok", "failed"):
            raise NotFound(f"unknown status {status!r}")
        where.append("status = ?")
        args.append(status)
    wsql = (" WHERE " + " AND ".join(where)) if where else ""
    direction = "DESC" if desc else "ASC"
    if sort in BASE_COLUMNS:
        order = f"{sort} IS NULL, {sort} {direction}, id"
        sargs: list[Any] = []
    else:
        expr = "CAST(json_extract(metrics, ?) AS REAL)"
        order = f"json_extract(metrics, ?) IS NULL, {expr} {direction}, id"
        sargs = [f"$.{_jkey(sort)}"] * 2
    with _open(run) as store:
        total = store._read(f"SELECT COUNT(*) FROM trials{wsql}", tuple(args))[0][0]  # noqa: SLF001
        rows = store._read(  # noqa: SLF001
            "SELECT id, arch, status, metrics, fidelity, cost, error, started_at, finished_at, "
            f"attempt FROM trials{wsql} ORDER BY {order} LIMIT ? OFFSET ?",
            (*args, *sargs, limit, offset))
        all_total = store._read("SELECT COUNT(*) FROM trials")[0][0]  # noqa: SLF001
        keys = [r[0] for r in store._read(  # noqa: SLF001 - metric names of a sample of rows
            "SELECT DISTINCT j.key FROM (SELECT metrics FROM trials ORDER BY id DESC LIMIT 200) t, "
            "json_each(t.metrics) j")]
    out = []
    for r in rows:
        out.append({
            "id": r[0], "arch": r[1], "status": r[2], "metrics": _json(r[3]) or {},
            "fidelity": _json(r[4]), "cost": _finite(r[5]),
            "error": (r[6] or "").strip().splitlines()[0][:200] if r[6] else None,
            "started_at": _finite(r[7]), "finished_at": _finite(r[8]), "attempt": r[9],
        })
    return {"total": total, "all": all_total, "offset": offset, "limit": limit,
            "sort": sort, "desc": desc, "metrics": sorted(str(k) for k in keys), "rows": out}


def _json(raw: Any) -> Any:
    if raw is None:
        return None
    try:
        v = json.loads(raw)
    except (TypeError, ValueError):
        return None
    return _clean(v)


def _clean(v: Any) -> Any:
    """JSON-safe: NaN/inf (a failed trial's metric) become None for the browser."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_clean(x) for x in v]
    return v


def trial_detail(run: Path, trial_id: int) -> dict[str, Any]:
    with _open(run) as store:
        try:
            t = store.trial(int(trial_id))
        except KeyError:
            raise NotFound(f"no trial {trial_id}") from None
        config = store.config
    d = _clean(t.to_dict())
    d["space"] = (config.get("space") or {}).get("name")
    return d


# ------------------------------------------------------------------------- what plots show
#: run_data results by run, with the store's state they were computed from
_RUN_CACHE: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {}


def run_data(run: Path) -> dict[str, Any]:
    """Everything the run page's plots need, computed from the stored trials.

    It reads every trial (about 1 s for 10,000), so the result is kept until the store
    changes (trial count, last finish, stored status): a page polling a run that is idle
    or finished costs one small query.
    """
    with _open(run) as store:
        sig = tuple(store._read(  # noqa: SLF001
            "SELECT COUNT(*), MAX(finished_at), MAX(started_at), SUM(status='running'), "
            "(SELECT value FROM meta WHERE key='status'), "
            "(SELECT length(value) FROM meta WHERE key='final') FROM trials")[0])
        key = str(run.resolve())
        hit = _RUN_CACHE.get(key)
        if hit is not None and hit[0] == sig:
            return hit[1]
        out = _run_data(store)
    if len(_RUN_CACHE) > 64:
        _RUN_CACHE.clear()
    _RUN_CACHE[key] = (sig, out)
    return out


def _run_data(store: RunStore) -> dict[str, Any]:
    from nasforge import reporting as R

    meta = store.meta()
    trials = store.trials()
    config = meta.get("config") or {}
    objs = R.run_objectives(config)
    cons = R.run_constraints(config)
    metric, mode = objs[0].metric, objs[0].mode
    sign = 1.0 if mode == "max" else -1.0
    done = sorted((t for t in trials if t.done), key=lambda t: (t.finished_at or 0.0, t.id))
    t0 = min((t.started_at for t in trials if t.started_at), default=0.0)
    curve: dict[str, list[Any]] = {"n": [], "t": [], "value": [], "best": [], "id": []}
    best = None
    for i, t in enumerate(done, 1):
        v = _finite(t.metrics.get(metric)) if t.ok else None
        if v is not None and (best is None or sign * v > sign * best):
            best = v
        curve["n"].append(i)
        curve["t"].append(round((t.finished_at or t0) - t0, 3))
        curve["value"].append(v)
        curve["best"].append(best)
        curve["id"].append(t.id)
    axes = R.report_objectives(objs, cons)
    pareto = None
    if len(axes) >= 2:
        resource = R.fidelity_resource(trials, ((config.get("strategy") or {}).get("options")
                                                or {}).get("resource"))
        front = set(R.pareto_ids(trials, axes, cons, resource))
        pts = [t for t in R.top_fidelity(trials, resource)
               if _finite(t.metrics.get(axes[0].metric)) is not None
               and _finite(t.metrics.get(axes[1].metric)) is not None]
        pareto = {"x": axes[1].metric, "y": axes[0].metric,
                  "points": [{"id": t.id, "arch": t.arch, "front": t.id in front,
                              "x": _finite(t.metrics[axes[1].metric]),
                              "y": _finite(t.metrics[axes[0].metric])} for t in pts]}
    final = meta.get("final") if isinstance(meta.get("final"), dict) else None
    return {"metric": metric, "mode": mode, "curve": curve, "pareto": pareto,
            "importance": choice_effects(trials, metric, mode),
            "final": _clean(final) if final else None,
            "space": (config.get("space") or {}).get("name"),
            "status": meta.get("status"), "n_trials": len(trials)}


def choice_effects(trials: Sequence[Any], metric: str, mode: str,
                   top: int = 15) -> list[dict[str, Any]]:
    """Which choices matter: per choice, the spread of the mean ``metric`` across its
    values (the marginal effect), largest first.

    Written here rather than through Optuna's importance evaluators: those need an
    Optuna study with distributions, while this is a few lines over the stored trials
    and works on any space, including a run still writing.
    """
    # values are grouped by (type, value) and written as JSON once per distinct value:
    # a json.dumps per trial and choice was 85 % of the run page's time at 10,000 trials
    by: dict[str, dict[Any, list[float]]] = {}
    for t in trials:
        v = _finite(t.metrics.get(metric)) if t.ok else None
        choices = (t.arch_json or {}).get("choices") if t.arch_json else None
        if v is None or not isinstance(choices, dict):
            continue
        for k, c in choices.items():
            key = (type(c), c) if c is None or isinstance(c, str | int | float) \
                else ("json", json.dumps(c))  # lists, mappings: by their JSON
            by.setdefault(str(k), {}).setdefault(key, []).append(v)
    out = []
    for k, raw in by.items():
        vals: dict[str, list[float]] = {}
        for (kind, c), vs in raw.items():
            text = c if kind == "json" else json.dumps(c)
            vals.setdefault(text, []).extend(vs)
        means = {c: sum(vs) / len(vs) for c, vs in vals.items()}
        if len(means) < 2:
            continue
        best_c = (max if mode == "max" else min)(means, key=means.get)  # type: ignore[arg-type]
        out.append({"choice": k, "effect": max(means.values()) - min(means.values()),
                    "best_value": json.loads(best_c), "n_values": len(means),
                    "means": {c: round(m, 6) for c, m in sorted(means.items())}})
    out.sort(key=lambda d: -d["effect"])
    return out[:top]


def best_arch(run: Path) -> dict[str, Any] | None:
    """The returned (or else best-ranked) trial's architecture, for the compare page."""
    from nasforge import reporting as R

    with _open(run) as store:
        meta = store.meta()
        trials = store.trials("ok")
    config = meta.get("config") or {}
    final = meta.get("final") if isinstance(meta.get("final"), dict) else {}
    objs = R.run_objectives(config)
    ranked = R.ranked_candidates(trials, objs[0], R.run_constraints(config))
    pick = None
    if final.get("trial_id") is not None:
        pick = next((t for t in trials if t.id == final.get("trial_id")), None)
    pick = pick or (ranked[0] if ranked else None)
    if pick is None:
        return None
    return {"id": pick.id, "arch": pick.arch, "arch_json": _clean(pick.arch_json),
            "metrics": _clean(pick.metrics), "space": (config.get("space") or {}).get("name")}
