"""Atomic file outputs: write beside the target, then rename into place.

A stage killed mid-write leaves the previous output (or nothing), never a truncated file: every
file tandem writes goes through ``atomic_path``. ``os.replace`` within one directory is atomic,
so readers (and DVC) see either the old file or the complete new one.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _default_mode() -> int:
    """0666 minus the process umask: what ``open(path, "w")`` would give a new file."""
    return 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success rename it onto ``path``, else remove it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        # mkstemp makes the file 0600: give it a new file's mode (or keep the old file's)
        mode = target.stat().st_mode & 0o777 if target.exists() else _default_mode()
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# Folders beside an atomic_dir target ``<name>``, each named after the process that made it:
#   .<name>.<pid>-<random>.tmp      being written, or a replaced folder being removed (partial)
#   .<name>.<pid>-<random>.new.tmp  complete, about to be moved to <name>
#   .<name>.<pid>-<random>.old.tmp  the previous <name>, moved aside for the new one
# All end in .tmp (git-ignored). Only folders whose process has died are ever touched by another
# process; ``.<name>.<random>.tmp`` (no pid) is an unfinished folder with no known owner.
_OWNED = re.compile(r"(?P<pid>\d+)-[a-z0-9_]+(?:\.(?P<kind>new|old))?\.tmp")
_UNOWNED = re.compile(r"[a-z0-9_]+\.tmp")


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (this one included); True where that cannot be probed."""
    if pid == os.getpid() or os.name == "nt":  # Windows' os.kill would terminate it
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists, under another user
        return True
    return True


def _leftovers(target: Path) -> list[tuple[Path, str]]:
    """Folders beside ``target`` that a dead process left, as (path, kind): kind ``tmp`` may be
    partial; ``new`` and ``old`` are complete."""
    prefix = f".{target.name}."
    found = []
    for path in target.parent.glob(glob.escape(prefix) + "*.tmp"):
        rest = path.name[len(prefix) :]
        if match := _OWNED.fullmatch(rest):
            if not _alive(int(match["pid"])):
                found.append((path, match["kind"] or "tmp"))
        elif _UNOWNED.fullmatch(rest):
            found.append((path, "tmp"))
    return found


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:  # gone meanwhile
        return float("-inf")


def _recover(target: Path) -> None:
    """Finish what a killed atomic_dir left beside ``target``: when ``target`` is missing, the
    newest complete folder (a new one, else the old one) goes back to it; then the dead
    processes' folders are removed, complete ones only once ``target`` holds a folder."""
    import shutil

    leftovers = _leftovers(target)
    if not target.exists():
        for kind in ("new", "old"):
            complete = [path for path, k in leftovers if k == kind]
            if complete:
                newest = max(complete, key=_mtime)
                with contextlib.suppress(OSError):  # another process restored one first
                    os.rename(newest, target)
                break
    restored = target.exists()
    for path, kind in leftovers:
        if (kind == "tmp" or restored) and path.exists():
            shutil.rmtree(path, ignore_errors=True)


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2  # Linux renameat2 flag
_RENAME_SWAP = 2  # macOS renamex_np flag


@functools.cache
def _swap_call() -> Callable[[bytes, bytes], int] | None:
    """The C call that swaps two paths atomically (0 on success, else errno is set); None where
    the platform has none."""
    import ctypes
    import sys

    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    if sys.platform.startswith("linux") and hasattr(libc, "renameat2"):
        renameat2 = libc.renameat2
        return lambda a, b: renameat2(_AT_FDCWD, a, _AT_FDCWD, b, _RENAME_EXCHANGE)
    if sys.platform == "darwin" and hasattr(libc, "renamex_np"):
        renamex_np = libc.renamex_np
        return lambda a, b: renamex_np(a, b, _RENAME_SWAP)
    return None


def _exchange(a: Path, b: Path) -> bool:
    """Swap the folders at ``a`` and ``b`` in one atomic step; False where the platform or the
    file system cannot (the caller then renames twice)."""
    import ctypes
    import errno

    swap = _swap_call()
    if swap is None:
        return False
    if swap(os.fsencode(a), os.fsencode(b)) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temp folder beside ``path``; on success it replaces ``path``, else it is
    removed.

    A kill at any point leaves ``path`` holding the old folder or the complete new one: the two
    are swapped in one atomic step (Linux ``renameat2``, macOS ``renamex_np``). Where the file
    system cannot swap, the old folder is renamed aside and the new one in; a kill between those
    two renames leaves both complete folders beside ``path``, and the next ``atomic_dir`` on
    ``path`` puts the new one back. Folders beside ``path`` that a dead process left are removed
    first (a complete one only once ``path`` holds a folder); those of live processes are never
    touched, so two processes writing beside each other do not disturb one another.
    """
    import shutil

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _recover(target)
    tmp = Path(
        tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.{os.getpid()}-", suffix=".tmp")
    )
    stem = tmp.name[: -len(".tmp")]
    ready, old = tmp.with_name(f"{stem}.new.tmp"), tmp.with_name(f"{stem}.old.tmp")
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700; give it a new folder's mode
        os.rename(tmp, ready)  # complete: from here on, never removed as partial
        if not target.exists():
            os.rename(ready, target)
        elif _exchange(ready, target):  # target: the new folder; ready: the old one
            os.rename(ready, tmp)  # the old folder, now only something to remove
        else:
            os.rename(target, old)
            os.rename(ready, target)
            os.rename(old, tmp)
    except BaseException:
        if old.exists() and not target.exists():  # the new folder did not go in: the old back
            with contextlib.suppress(OSError):
                os.rename(old, target)
        if target.exists():
            shutil.rmtree(ready, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class LockedError(RuntimeError):
    """Another live process holds the lock: nothing was run, nothing written."""


LOCKS = ".tandem/locks"  # under the project root (git-ignored)


@contextlib.contextmanager
def writer_lock(root: str | os.PathLike[str], key: str, what: str) -> Iterator[None]:
    """Hold the lock ``key`` (one per registry entry) for as long as the block runs, so that a
    second writer of the same outputs fails at once, naming the holder, instead of both writing
    into the same folders. An OS lock (``flock``): released when its process dies, however it
    dies, so a killed run never leaves the entry locked. Where the platform has no ``flock``
    (Windows) nothing is locked."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    import datetime

    path = Path(root) / LOCKS / f"{key}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "unknown"
            raise LockedError(
                f"{key}: another tandem process is writing its outputs ({holder}); wait for it "
                f"to finish or stop it, then run again ({path} is its lock)"
            ) from None
        since = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, {what}, since {since}".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def to_jsonable(obj: Any) -> Any:
    """numpy scalars/arrays -> Python; non-finite floats -> None (strict JSON has no NaN)."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as strict JSON atomically, creating parent directories."""
    return write_text(path, json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n")


def write_parquet(path: str | os.PathLike[str], frame) -> Path:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
    return Path(path)


def read_parquet(path: str | os.PathLike[str]):
    """Read a parquet file; a missing or corrupt file is an error that names it."""
    import pandas as pd
    import pyarrow as pa

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run the stage that writes it first")
    try:
        return pd.read_parquet(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ValueError(f"{path} is not a readable parquet file: {exc}") from exc
