"""The run store: one SQLite file per run, so that an experiment is never lost.

Everything a search knows lives in ``RUN_DIR/nasforge.db``: the configuration that
rebuilds it, every trial (started, finished or failed) and the strategy's state. The
loop writes in two atomic steps -- "trial started" (the running row *and* the strategy
state right after ``ask``) and "trial finished" (the result *and* the state right after
``tell``) -- so whatever moment a process dies at, the database describes a point the
search really passed through, and a resume continues exactly from there.

SQLite in WAL mode with ``synchronous=FULL``: readers (``nasforge show``, a notebook)
never block the writer, and a committed trial survives a crash or power cut. A lock file
holding the writer's pid and hostname keeps two searches from writing the same run.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nasforge.errors import RunDirError
from nasforge.records import (  # noqa: F401 - moved there, re-exported here
    TrialRecord,
    _dumps,
    _json_default,
    best_trial,
    trials_dataframe,
)
from nasforge.store_lock import _Lock, _pid_alive  # noqa: F401 - moved there

if TYPE_CHECKING:
    import pandas as pd

    from nasforge.estimators.base import Result


#: the type every known meta key must have when read back (others: any JSON)
META_TYPES: dict[str, type | tuple[type, ...]] = {
    "config": dict, "status": str, "final": dict, "format_version": int,
    "elapsed_s": (int, float),
}

def _os_reason(e: BaseException) -> str:
    """A one-line reason for an OS or SQLite failure ("No space left on device", ...)."""
    if isinstance(e, OSError):
        return e.strerror or str(e)
    text = str(e)
    return "the disk is full" if "full" in text.lower() else text


#: the on-disk format this code writes; opening a run with a larger number is refused.
#: 2: trials record the order they were told (``told``) and the strategy's note on the ask
#: (``note``), from which a strategy rebuilds its history; its saved state stays O(1).
#: A format-1 run is upgraded in place when opened for writing.
FORMAT_VERSION = 2
DB_NAME = "nasforge.db"
LOCK_NAME = "nasforge.lock"

_SCHEMA = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL              -- JSON
);
CREATE TABLE trials (
    id          INTEGER PRIMARY KEY,
    arch        TEXT NOT NULL,       -- canonical string
    arch_json   TEXT NOT NULL,
    fidelity    TEXT,                -- JSON or NULL (estimator default)
    status      TEXT NOT NULL CHECK (status IN ('running', 'ok', 'failed')),
    metrics     TEXT NOT NULL DEFAULT '{}',
    report      TEXT NOT NULL DEFAULT '{}',
    cost        REAL,
    error       TEXT,
    started_at  REAL NOT NULL,
    finished_at REAL,
    attempt     INTEGER NOT NULL DEFAULT 1,
    told        INTEGER,             -- the strategy's tell count after this trial's tell
    note        TEXT                 -- JSON or NULL: what the strategy noted on the ask
);
CREATE INDEX trials_status ON trials (status);
CREATE TABLE strategy_state (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    state      TEXT NOT NULL,        -- JSON (Strategy.state_dict(): O(1), see trials)
    n_told     INTEGER NOT NULL,
    updated_at REAL NOT NULL
);
"""


class RunStore:
    """The SQLite store of one run (see module docstring).

    Use :meth:`create` for a new run and :meth:`open` for an existing one; open with
    ``write=True`` to continue writing it (takes the run's lock). A store is a context
    manager and must be closed to release the lock.
    """

    def __init__(self, run_dir: Path, conn: sqlite3.Connection, lock: _Lock | None) -> None:
        self.run_dir = run_dir
        self._conn = conn
        self._lock = lock
        try:  # a format-1 run opened read-only has no told/note columns: read them as NULL
            have = self._trial_columns(conn)
        except sqlite3.Error:
            have = set()
        self._cols = self._COLS + "".join(
            f", {c}" if c in have else ", NULL" for c in ("told", "note"))

    # -- opening ---------------------------------------------------------------------------
    @staticmethod
    def exists(run_dir: str | os.PathLike[str]) -> bool:
        """Whether ``run_dir`` holds a run database (valid or not)."""
        return (Path(run_dir) / DB_NAME).exists()

    @classmethod
    def create(cls, run_dir: str | os.PathLike[str], config: Mapping[str, Any]) -> RunStore:
        """Start a new run in ``run_dir`` (created if needed), locked for writing."""
        from nasforge import __version__

        run_dir = Path(run_dir)
        if cls.exists(run_dir):
            raise RunDirError(
                f"a run already exists in {run_dir}. Continue it with `nasforge resume {run_dir}` "
                f"(resume=True in Python), or choose another --out directory."
            )
        if run_dir.exists() and not run_dir.is_dir():
            raise RunDirError(f"{run_dir} exists and is not a directory; choose another --out")
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunDirError(f"cannot create run directory {run_dir}: {e}") from None
        lock = _Lock(run_dir / LOCK_NAME)
        lock.acquire()
        tmp = run_dir / f".{DB_NAME}.creating-{os.getpid()}"
        try:
            if cls.exists(run_dir):  # another process created it while we took the lock
                raise RunDirError(
                    f"a run already exists in {run_dir}. Continue it with `nasforge resume "
                    f"{run_dir}`, or choose another --out directory."
                )
            # build the schema in a side file and rename it in: a half-created run never exists
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            now = time.time()
            meta = {
                "format_version": FORMAT_VERSION,
                "nasforge_version": __version__,
                "config": dict(config),
                "status": "created",
                "elapsed_s": 0.0,
                "created_at": now,
            }
            c = sqlite3.connect(tmp, isolation_level=None)
            try:
                c.execute("PRAGMA journal_mode=DELETE")
                # a side file renamed in afterwards: the schema need not be one transaction
                c.executescript(_SCHEMA)
                c.execute("BEGIN")
                c.executemany("INSERT INTO meta (key, value) VALUES (?, ?)",
                              [(k, _dumps(v)) for k, v in meta.items()])
                c.execute("COMMIT")
            finally:
                c.close()
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, run_dir / DB_NAME)
            conn = cls._connect(run_dir / DB_NAME)
            conn.execute("PRAGMA journal_mode=WAL")
        except BaseException as e:
            with contextlib.suppress(OSError):
                tmp.unlink()  # never leave the side file behind (disk full, Ctrl-C)
            lock.release()
            if isinstance(e, sqlite3.Error | OSError):
                raise RunDirError(f"cannot create the run in {run_dir}: {_os_reason(e)}") from None
            raise
        return cls(run_dir, conn, lock)

    @classmethod
    def open(cls, run_dir: str | os.PathLike[str], *, write: bool = False) -> RunStore:
        """Open an existing run; ``write=True`` takes its lock (refused while a writer lives)."""
        run_dir = Path(run_dir)
        db = run_dir / DB_NAME
        if not run_dir.exists():
            raise RunDirError(f"run directory {run_dir} does not exist")
        if not run_dir.is_dir():
            raise RunDirError(f"{run_dir} is not a run directory (not a directory)")
        if not db.is_file():
            raise RunDirError(
                f"{run_dir} is not a nasforge run (no {DB_NAME} in it); "
                f"start a search there with `nasforge search --out {run_dir}`"
            )
        lock = _Lock(run_dir / LOCK_NAME) if write else None
        if lock is not None:
            lock.acquire()
        try:
            conn = cls._connect(db, readonly=not write)
            try:
                cls._check(conn, db)
                if write:
                    cls._upgrade(conn, db)
            except BaseException:
                conn.close()
                raise
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        return cls(run_dir, conn, lock)

    @staticmethod
    def _trial_columns(conn: sqlite3.Connection) -> set[str]:
        return {r[1] for r in conn.execute("PRAGMA table_info(trials)")}

    @classmethod
    def _upgrade(cls, conn: sqlite3.Connection, db: Path) -> None:
        """A format-1 run gets the ``told`` and ``note`` columns (and format 2) before this
        version writes O(1) strategy states into it: format-1 code would resume those
        without their history, so it is refused from then on."""
        try:
            if {"told", "note"} <= cls._trial_columns(conn):
                return
            conn.execute("BEGIN IMMEDIATE")
            try:
                have = cls._trial_columns(conn)
                for col, kind in (("told", "INTEGER"), ("note", "TEXT")):
                    if col not in have:
                        conn.execute(f"ALTER TABLE trials ADD COLUMN {col} {kind}")
                conn.execute("UPDATE meta SET value=? WHERE key='format_version'",
                             (_dumps(FORMAT_VERSION),))
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            raise RunDirError(f"cannot upgrade the run format of {db}: {_os_reason(e)}") from None

    @staticmethod
    def _connect(db: Path, readonly: bool = False) -> sqlite3.Connection:
        """A connection; ``readonly`` on media nasforge cannot write to opens the file as
        immutable (WAL mode would otherwise need to create its ``-shm`` file there)."""
        from urllib.parse import quote

        try:
            if readonly:
                cannot_write = not os.access(db.parent, os.W_OK)
                uri = f"file:{quote(str(db.resolve()))}?" + (
                    "immutable=1" if cannot_write else "mode=ro")
                conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30.0)
            else:
                conn = sqlite3.connect(db, isolation_level=None, timeout=30.0)
        except sqlite3.Error as e:
            raise RunDirError(f"cannot open {db}: {e}") from None
        try:
            conn.execute("PRAGMA busy_timeout=30000")
            if not readonly:
                conn.execute("PRAGMA synchronous=FULL")
        except sqlite3.DatabaseError as e:
            conn.close()
            raise RunDirError(
                f"{db} is corrupt or not a nasforge run database ({e}); "
                f"start a new run with another --out directory"
            ) from None
        return conn

    @staticmethod
    def _check(conn: sqlite3.Connection, db: Path) -> None:
        """Refuse anything that is not a run database this version can read."""
        try:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            tables = {r[0] for r in rows}
            if not {"meta", "trials", "strategy_state"} <= tables:
                raise RunDirError(
                    f"{db} is a SQLite file but not a nasforge run database (tables missing)"
                )
            row = conn.execute("SELECT value FROM meta WHERE key='format_version'").fetchone()
            # a torn or tampered file is refused on open, not found out mid-search
            problems = [r[0] for r in conn.execute("PRAGMA quick_check(5)")]
            if problems != ["ok"]:
                raise RunDirError(
                    f"{db} is corrupt (SQLite integrity check: {'; '.join(problems)[:300]}); "
                    f"restore it from a backup or start a new run with another --out directory"
                )
        except sqlite3.DatabaseError as e:
            raise RunDirError(
                f"{db} is corrupt or not a nasforge run database ({e}); "
                f"start a new run with another --out directory"
            ) from None
        try:
            version = json.loads(row[0]) if row else None
        except ValueError:
            version = None
        if not isinstance(version, int) or isinstance(version, bool):
            raise RunDirError(f"{db} has an unknown run format ({row[0] if row else 'missing'!r})")
        if version > FORMAT_VERSION:
            raise RunDirError(
                f"{db} was written by a newer nasforge (run format {version}; this version reads "
                f"up to {FORMAT_VERSION}). Upgrade nasforge to open it."
            )

    # -- closing ---------------------------------------------------------------------------
    def close(self) -> None:
        """Close the database and release the lock (idempotent)."""
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None  # type: ignore[assignment]
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # a forgotten store must not keep the run locked
        with contextlib.suppress(Exception):
            self.close()

    @property
    def writable(self) -> bool:
        return self._lock is not None and self._lock.held

    @property
    def path(self) -> Path:
        return self.run_dir / DB_NAME

    # -- transactions ----------------------------------------------------------------------
    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: all of it is stored, or none of it."""
        if self._conn is None:
            raise RunDirError(f"run store {self.run_dir} is closed")
        if not self.writable:
            raise RunDirError(f"run {self.run_dir} was opened read-only (open it with write=True)")
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self._conn is None:
            raise RunDirError(f"run store {self.run_dir} is closed")
        try:
            return self._conn.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as e:  # torn pages, bytes that are not UTF-8, ...
            raise self._damaged(f"cannot be read ({e})") from None

    def _damaged(self, what: str) -> RunDirError:
        return RunDirError(
            f"{self.path} is damaged: {what}; restore it from a backup, or start a new run "
            "with another --out directory"
        )

    def _loads(self, raw: Any, what: str, kind: type | tuple[type, ...] | None = None) -> Any:
        """A stored JSON value, parsed and type-checked: stored values are untrusted."""
        try:
            v = json.loads(raw)
        except (TypeError, ValueError, RecursionError):
            raise self._damaged(f"{what} is not valid JSON") from None
        if kind is not None and not isinstance(v, kind):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise self._damaged(f"{what} is a {type(v).__name__}, not a {names}")
        return v

    # -- meta ------------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        """All meta values (config, status, elapsed_s, final, ...), each type-checked."""
        return {k: self._meta_value(k, v) for k, v in self._read("SELECT key, value FROM meta")}

    def _meta_value(self, key: str, raw: Any) -> Any:
        return self._loads(raw, f"meta key {key!r}", META_TYPES.get(key))

    def get_meta(self, key: str, default: Any = None) -> Any:
        rows = self._read("SELECT value FROM meta WHERE key=?", (key,))
        return self._meta_value(key, rows[0][0]) if rows else default

    def set_meta(self, key: str | None = None, value: Any = None, **more: Any) -> None:
        """Set one or several meta values in one transaction."""
        items = dict(more)
        if key is not None:
            items[key] = value
        with self._tx() as c:
            self._put_meta(c, items)

    @staticmethod
    def _put_meta(c: sqlite3.Connection, items: Mapping[str, Any]) -> None:
        c.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value=excluded.value",
            [(k, _dumps(v)) for k, v in items.items()],
        )

    @property
    def config(self) -> dict[str, Any]:
        return self.get_meta("config", {})


    # -- strategy state --------------------------------------------------------------------
    def strategy_state(self) -> tuple[dict[str, Any] | None, int]:
        """The last saved strategy state and its number of told trials (``(None, 0)`` if none)."""
        rows = self._read("SELECT state, n_told FROM strategy_state WHERE id=1")
        if not rows:
            return None, 0
        state = self._loads(rows[0][0], "the strategy state", dict)
        try:
            return state, int(rows[0][1])
        except (TypeError, ValueError):
            raise self._damaged("the strategy state's trial count is not a number") from None

    @staticmethod
    def _put_state(c: sqlite3.Connection, state: Mapping[str, Any], n_told: int) -> None:
        c.execute(
            "INSERT INTO strategy_state (id, state, n_told, updated_at) VALUES (1, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET state=excluded.state, n_told=excluded.n_told, "
            "updated_at=excluded.updated_at",
            (_dumps(state), int(n_told), time.time()),
        )

    def save_strategy_state(self, state: Mapping[str, Any], n_told: int) -> None:
        with self._tx() as c:
            self._put_state(c, state, n_told)

    # -- trials: the two atomic steps ------------------------------------------------------
    def start_trial(
        self,
        arch: str,
        arch_json: Mapping[str, Any],
        fidelity: Mapping[str, Any] | None,
        strategy_state: Mapping[str, Any],
        n_told: int,
        meta: Mapping[str, Any] | None = None,
        note: Mapping[str, Any] | None = None,
    ) -> int:
        """"Trial started": insert the running row and save the state taken right after ``ask``.

        ``note``: what the strategy noted on this ask (``Suggestion.note``), written once
        here so that its saved state need not carry it.
        """
        with self._tx() as c:
            cur = c.execute(
                "INSERT INTO trials (arch, arch_json, fidelity, status, started_at, note) "
                "VALUES (?, ?, ?, 'running', ?, ?)",
                (arch, _dumps(arch_json), None if fidelity is None else _dumps(fidelity),
                 time.time(), None if note is None else _dumps(note)),
            )
            self._put_state(c, strategy_state, n_told)
            if meta:
                self._put_meta(c, meta)
            return int(cur.lastrowid)  # type: ignore[arg-type]

    def restart_trial(self, trial_id: int) -> None:
        """A running trial that never finished is evaluated again: count the attempt."""
        with self._tx() as c:
            n = c.execute(
                "UPDATE trials SET attempt=attempt+1, started_at=? WHERE id=? AND status='running'",
                (time.time(), trial_id),
            ).rowcount
            if n != 1:
                raise RunDirError(f"trial {trial_id} is not a running trial of {self.run_dir}")

    def finish_trial(
        self,
        trial_id: int,
        result: Result,
        strategy_state: Mapping[str, Any],
        n_told: int,
        meta: Mapping[str, Any] | None = None,
        attempts: int = 1,
    ) -> None:
        """"Trial finished": store the result and the state right after ``tell``, atomically.

        ``attempts`` > 1 says the executor had to start the trial again in this session (its
        worker died); the extra starts are added to the row's ``attempt`` count. ``n_told``
        (the strategy's tell count, this tell included) is also the trial's place in the
        order of tells (``told``), which a strategy's rebuild replays.
        """
        status = "ok" if result.ok else "failed"
        extra = max(0, int(attempts) - 1)
        with self._tx() as c:
            n = c.execute(
                "UPDATE trials SET status=?, metrics=?, report=?, cost=?, error=?, finished_at=?, "
                "attempt=attempt+?, told=? WHERE id=? AND status='running'",
                (status, _dumps(result.metrics), _dumps(result.report), float(result.cost or 0.0),
                 result.error, time.time(), extra, int(n_told), trial_id),
            ).rowcount
            if n != 1:
                raise RunDirError(
                    f"trial {trial_id} of {self.run_dir} is not running; cannot finish it"
                )
            self._put_state(c, strategy_state, n_told)
            if meta:
                self._put_meta(c, meta)

    # -- reading ---------------------------------------------------------------------------
    _COLS = ("id, arch, fidelity, status, metrics, report, cost, error, started_at, finished_at, "
             "attempt, arch_json")

    def _record(self, row: tuple[Any, ...]) -> TrialRecord:
        """A trial row, every field checked: a tampered row is a clear error, not a crash
        somewhere later."""
        tid = row[0]
        what = f"trial {tid!r}"
        try:
            rec = TrialRecord(
                id=int(tid),
                arch=row[1],
                fidelity=None if row[2] is None else self._loads(row[2], f"{what} fidelity",
                                                                 dict),
                status=row[3],
                metrics=self._loads(row[4] or "{}", f"{what} metrics", dict),
                report=self._loads(row[5] or "{}", f"{what} report", dict),
                cost=None if row[6] is None else float(row[6]),
                error=row[7],
                started_at=row[8],
                finished_at=row[9],
                attempt=int(row[10]),
                arch_json=self._loads(row[11], f"{what} arch_json", dict) if row[11] else None,
                told=None if row[12] is None else int(row[12]),
                note=None if row[13] is None else self._loads(row[13], f"{what} note", dict),
            )
        except (TypeError, ValueError):
            raise self._damaged(f"{what} has a malformed id, cost or attempt count") from None
        if not isinstance(rec.arch, str) or rec.status not in ("running", "ok", "failed"):
            raise self._damaged(f"{what} has a malformed architecture or status")
        if rec.error is not None and not isinstance(rec.error, str):
            raise self._damaged(f"{what} has a malformed error text")
        return rec

    def trials(self, status: str | None = None) -> list[TrialRecord]:
        """All trials in id (= start) order, optionally only those with ``status``."""
        if status is None:
            rows = self._read(f"SELECT {self._cols} FROM trials ORDER BY id")
        else:
            rows = self._read(
                f"SELECT {self._cols} FROM trials WHERE status=? ORDER BY id", (status,)
            )
        return [self._record(r) for r in rows]

    def trial(self, trial_id: int) -> TrialRecord:
        rows = self._read(f"SELECT {self._cols} FROM trials WHERE id=?", (trial_id,))
        if not rows:
            raise KeyError(trial_id)
        return self._record(rows[0])

    def counts(self) -> dict[str, int]:
        """Number of trials per status (``running``, ``ok``, ``failed``; zeros included)."""
        out = {"running": 0, "ok": 0, "failed": 0}
        for status, n in self._read("SELECT status, COUNT(*) FROM trials GROUP BY status"):
            if status not in out:
                raise self._damaged(f"a trial has the unknown status {str(status)[:40]!r}")
            out[status] = int(n)
        return out

    def n_completed(self) -> int:
        c = self.counts()
        return c["ok"] + c["failed"]

    def best(self, metric: str = "val_accuracy", mode: str = "max") -> TrialRecord | None:
        """The ok trial with the best finite ``metric`` (earliest on ties), or None."""
        return best_trial(self.trials("ok"), metric, mode)


    def to_dataframe(self) -> pd.DataFrame:
        """One row per trial: id, arch, status, cost, ..., one column per metric, ``report_<k>``."""
        return trials_dataframe(self.trials())
