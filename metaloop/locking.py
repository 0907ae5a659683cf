"""An exclusive lock on a run directory, held while a process trains into it.

``RUN_DIR/.lock`` holds the owner's process id and host. On POSIX the lock is an ``fcntl.flock`` on that file,
so the kernel releases it when the owner dies, however it dies; a later trainer then takes the folder over and
says whose lock it was. Without ``fcntl`` (Windows) the file is created exclusively and a lock whose process
is gone on this host is taken over likewise.
"""

from __future__ import annotations

import json
import os
import socket
import warnings
from pathlib import Path
from types import TracebackType

from metaloop.errors import MetaloopError, MetaloopWarning

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK = ".lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def make_out_dir(folder: Path, what: str = "--out") -> None:
    """Create a run folder and its parents, or say in one line why it cannot be (a read-only or special file
    system that ``os.access`` calls writable, such as ``/proc``)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MetaloopError(f"{what} '{folder}': cannot create the folder ({exc.strerror})") from None


class RunLock:
    """``with RunLock(run_dir):`` — refuse (:class:`MetaloopError`) if another live process holds the folder."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        make_out_dir(self.path.parent)
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        if fcntl is not None:
            while True:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)
                    raise MetaloopError(self._busy(_owner(self.path))) from None
                try:
                    if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                        break  # the file is still the lock (its last owner removes it before unlocking)
                except FileNotFoundError:
                    pass
                os.close(fd)
            previous = _owner(self.path)
        else:  # pragma: no cover - Windows
            previous = _owner(self.path)
            if previous.get("host") == me["host"] and isinstance(previous.get("pid"), int) and _alive(previous["pid"]):
                raise MetaloopError(self._busy(previous))
            self.path.unlink(missing_ok=True)
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                raise MetaloopError(self._busy(_owner(self.path))) from None
        if previous.get("pid") not in (None, me["pid"]):
            warnings.warn(f"RUN_DIR '{self.path.parent}': took over the lock of process {previous['pid']} "
                          f"on {previous.get('host', '?')}, which stopped without releasing it", MetaloopWarning,
                          stacklevel=2)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(me).encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def _busy(self, owner: dict) -> str:
        who = f"process {owner['pid']} on {owner.get('host', '?')}" if "pid" in owner else "another process"
        return (f"RUN_DIR '{self.path.parent}' is being trained by {who} (lock {self.path}); wait for it to "
                "finish or stop it, then try again")

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still held: no one else can have taken it
        finally:
            if fcntl is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
