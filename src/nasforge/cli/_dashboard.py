"""``nasforge dashboard`` (the live web app) and ``nasforge report`` (one HTML file)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nasforge.cli._app import _error, _out, app
from nasforge.errors import NasforgeError

LOOPBACK = "127.0.0.1"


def _need_extra() -> None:
    try:
        import plotly  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise NasforgeError(f"the dashboard needs {e.name}: pip install 'nasforge[dashboard]'") \
            from None


@app.command("dashboard")
def dashboard_cmd(
    runs_dir: Annotated[Path, typer.Argument(
        help="Directory of runs (or one run).")] = Path("runs"),
    host: Annotated[str | None, typer.Option(
        help="Address to bind (default 127.0.0.1, this machine only).")] = None,
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: a free one).")] = 8765,
) -> None:
    """A local, read-only web dashboard of every run under RUNS_DIR; updates live."""
    _need_extra()
    if not runs_dir.is_dir():
        raise NasforgeError(f"{runs_dir} is not a directory; give the folder your runs are in "
                            "(nasforge dashboard runs/)")
    import socket

    import uvicorn

    from nasforge.dashboard.app import create_app

    bind = host or LOOPBACK
    if host is not None and host not in (LOOPBACK, "localhost", "::1"):
        _error(f"warning: the dashboard listens on {host}: anyone who can reach this machine "
               "can read these runs (it has no login)")
    sock = socket.socket(socket.AF_INET6 if ":" in bind else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((bind, port))
    except OSError as e:
        raise NasforgeError(f"cannot listen on {bind}:{port} ({e.strerror}); try --port 0") \
            from None
    real = sock.getsockname()[1]
    shown = f"[{bind}]" if ":" in bind else bind
    _out(f"nasforge dashboard of {runs_dir.resolve()} at http://{shown}:{real}/  (Ctrl-C stops)",
         "bold")
    import sys

    sys.stdout.flush()
    config = uvicorn.Config(create_app(runs_dir), log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


@app.command("report")
def report_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="The HTML file (default RUN_DIR/report.html).")] = None,
) -> None:
    """One self-contained HTML report of a run (plots embedded; opens offline)."""
    _need_extra()
    from nasforge.dashboard.data import NotFound
    from nasforge.dashboard.report import write_report

    try:
        path = write_report(run_dir, out)
    except NotFound as e:
        raise NasforgeError(str(e)) from None
    _out(f"report written to {path}")
