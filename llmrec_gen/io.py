"""Writing outputs safely: atomic files and directories, and plain-Python values for JSON.

A crash or ``kill -9`` never leaves a half-written output behind: files are written to a temp file
in the same directory and renamed into place; directories are built in a temp directory beside
the target and renamed. Outputs get the usual permissions of the caller's umask (temp files are
created private by ``mkstemp``/``mkdtemp``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from llmrec_gen.errors import BusyError, ConfigError


def to_python(value: Any) -> Any:
    """A numpy scalar as the equal Python scalar (``np.int64(5)`` -> ``5``); others unchanged."""
    return value.item() if isinstance(value, np.generic) else value


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def share_permissions(path: Path) -> None:
    """Give a temp-built file or directory tree the permissions of the caller's umask."""
    mask = _umask()
    path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)
    if path.is_dir():
        for child in path.rglob("*"):
            child.chmod((0o777 if child.is_dir() else 0o666) & ~mask)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory + ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically (numpy values become Python)."""
    atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic | np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


@contextlib.contextmanager
def atomic_directory(target: Path, *, replace: bool = True) -> Iterator[Path]:
    """Build a directory in a temp dir beside ``target``; rename it into place on success.

    Args:
        target: the directory to create.
        replace: replace an existing ``target`` (the old one is renamed aside, then removed);
            if False and another process created ``target`` first, the new copy is discarded.

    Yields:
        The temp directory to fill. On an exception it is removed and ``target`` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        share_permissions(tmp)
        old = None
        if target.exists():
            if not replace:
                shutil.rmtree(tmp, ignore_errors=True)
                return
            old = target.with_name(f".{target.name}.old.{os.getpid()}")
            os.rename(target, old)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.exists():  # a real error, not a concurrent finisher
                raise
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_writable(output_dir: str | Path, what: str, *, create: bool = False) -> Path:
    """Raise :class:`ConfigError` naming ``output_dir`` unless it can be created and written.

    Args:
        output_dir: the directory.
        what: how the message names it (e.g. ``"eval config: output_dir"``).
        create: create it (and its parents); otherwise only the nearest existing ancestor is
            checked, so validating a config has no side effects.

    Returns:
        The expanded path.
    """
    path = Path(output_dir).expanduser()
    try:
        if create:
            path.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=path):
                pass
            return path
        probe = path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not probe.is_dir() or str(probe.resolve()).startswith(("/proc", "/sys")):
            raise NotADirectoryError(20, f"'{probe}' is not a directory")
        if not os.access(probe, os.W_OK | os.X_OK):
            raise PermissionError(13, f"no write permission on '{probe}'")
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"{what}: '{output_dir}' is not writable ({reason})") from None
    return path


LOCK_FILE = ".lock"
"""The lock file inside a locked directory (it stays; the lock is the ``flock`` on it)."""


@contextlib.contextmanager
def directory_lock(directory: Path, what: str = "run directory") -> Iterator[Path]:
    """Hold an exclusive lock on ``directory`` for the duration of the block; fail if taken.

    The lock is an ``flock`` on ``directory/.lock``: the kernel releases it when the holder
    exits, even after ``kill -9``, so a lock is never stale. The holder writes its pid, host
    and start time into the file so a second process can say who holds it. A second process
    fails at once instead of waiting (a run can take hours; waiting silently would look like a
    hang). ``flock`` is reliable on local file systems; on NFS it depends on the server.

    Raises:
        BusyError: another process holds the lock (the message names its pid and host).
    """
    import fcntl
    import socket
    import time

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(path)
            raise BusyError(
                f"{what} '{directory}' is in use by {holder}; wait for it to finish or use "
                "another output_dir"
            ) from None
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        yield directory
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def _lock_holder(path: Path) -> str:
    """``"pid 123 on host h (since ...)"`` from a lock file, or a vaguer text if unreadable."""
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        info = {}
    if not info.get("pid"):
        return "another process"
    since = f" (since {info['started']})" if info.get("started") else ""
    return f"pid {info['pid']} on host {info.get('host', '?')}{since}"
