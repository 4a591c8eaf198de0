"""The lock file that keeps two processes from writing one run.

Moved out of :mod:`nasforge.store` (which uses it and re-exports its names): the locking
is independent of how the run is stored.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nasforge.errors import RunDirError


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError as e:
        return e.errno != errno.ESRCH
    return True


class _Lock:
    """A lock file ``{pid, host}`` made with O_EXCL; a stale one (dead local pid) is taken over.

    A plain file (not ``flock``) so that it also names the holder in the error message
    and works the same on network file systems shared by several hosts.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.held = False

    def acquire(self) -> None:
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        for _ in range(20):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                fd = None
            except OSError as e:  # read-only media, no permission, a path under a file
                ro = e.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
                raise RunDirError(
                    f"cannot write to {self.path.parent}: {e.strerror or e}"
                    + ("; the directory is read-only (show, load and predict still work; "
                       "copy the run somewhere writable to continue it)" if ro else "")
                ) from None
            if fd is None:
                holder = self._read()
                if holder is None:
                    # created but not yet written by its owner, or a crash in between:
                    # only an old empty file is stale
                    try:
                        age = time.time() - self.path.stat().st_mtime
                    except FileNotFoundError:
                        continue
                    if age < 5.0:
                        time.sleep(0.05)
                        continue
                elif not self._stale(holder):
                    raise RunDirError(
                        f"run {self.path.parent} is being written by another process "
                        f"(pid {holder.get('pid')} on host {holder.get('host')!r}). Wait for it to "
                        f"finish, or stop it; if that process is gone, delete {self.path}."
                    ) from None
                # stale: move it aside; only one of several racing processes wins the rename
                aside = self.path.with_name(f"{self.path.name}.stale-{os.getpid()}")
                try:
                    os.replace(self.path, aside)
                except FileNotFoundError:
                    continue
                with contextlib.suppress(OSError):
                    aside.unlink()
                continue
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump(me, f)
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as e:  # disk full: leave no half-written lock behind
                with contextlib.suppress(OSError):
                    self.path.unlink()
                raise RunDirError(f"cannot write the lock {self.path}: {e.strerror or e}") from None
            self.held = True
            return
        raise RunDirError(f"could not take the lock {self.path}; delete it if no search is running")

    def _read(self) -> dict[str, Any] | None:
        try:
            doc = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) and "pid" in doc else None

    @staticmethod
    def _stale(holder: Mapping[str, Any]) -> bool:
        if holder.get("host") != socket.gethostname():
            return False  # cannot tell whether a pid on another host is alive
        try:
            pid = int(holder["pid"])
        except (TypeError, ValueError):
            return True
        return not _pid_alive(pid)

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        holder = self._read()
        if holder is not None and holder.get("pid") == os.getpid() \
                and holder.get("host") == socket.gethostname():
            with contextlib.suppress(OSError):
                self.path.unlink()
