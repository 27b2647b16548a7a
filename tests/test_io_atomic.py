"""io.atomic_dir under kills: the target always holds the old or the new complete folder, the next
call repairs what a killed one left, and folders of live processes are never removed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tandem import io as tio

# Run in a subprocess: atomic_dir(target) writes the "new" folder and the process dies (os._exit,
# which skips every finally block, as SIGKILL does) at the point named by argv[2]:
#   written  inside the with block, the new folder fully written
#   moved    right after the old folder left the path (the swap, or the first of two renames)
#   removing while the replaced folder is being removed, half of it gone
# argv[3] == "rename": the file system cannot swap folders atomically (two renames instead).
KILLED_RUN = textwrap.dedent(
    """
    import os, shutil, sys
    from pathlib import Path
    from tandem import io

    target, point, mode = Path(sys.argv[1]).resolve(), sys.argv[2], sys.argv[3]
    real_rename, real_rmtree = os.rename, shutil.rmtree
    real_exchange = getattr(io, "_exchange", None)

    def rename(src, dst, *args, **kwargs):
        real_rename(src, dst, *args, **kwargs)
        if point == "moved" and Path(src).resolve() == target:
            os._exit(9)

    def exchange(a, b):
        if mode == "rename" or real_exchange is None or not real_exchange(a, b):
            return False
        if point == "moved":
            os._exit(9)
        return True

    def rmtree(folder, *args, **kwargs):
        folder = Path(folder)
        if point == "removing" and (folder / "a.txt").is_file() and folder != target:
            if (folder / "a.txt").read_text() == "old":
                (folder / "a.txt").unlink()
                os._exit(9)
        real_rmtree(folder, *args, **kwargs)

    os.rename, shutil.rmtree, io._exchange = rename, rmtree, exchange
    with io.atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("new")
        (tmp / "done.txt").write_text("new")  # written last: the folder is complete
        if point == "written":
            os._exit(9)
    """
)


def write_folder(target: Path, content: str) -> None:
    with tio.atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text(content)
        (tmp / "done.txt").write_text(content)


def content(target: Path) -> str:
    """Which complete folder ``target`` holds, "old" or "new" (fails on a partial one)."""
    beside = sorted(p.name for p in target.parent.iterdir())
    assert target.is_dir(), f"no folder at {target}; beside it: {beside}"
    files = {p.name: p.read_text() for p in target.iterdir()}
    assert set(files) == {"a.txt", "done.txt"} and files["a.txt"] == files["done.txt"], files
    return files["a.txt"]


def kill_during_write(target: Path, point: str, mode: str = "swap") -> None:
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, str(target), point, mode],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 9, f"the run was not killed at {point!r}: {proc.stderr}"


def fail_inside(target: Path) -> None:
    with pytest.raises(RuntimeError):
        with tio.atomic_dir(target) as tmp:
            (tmp / "a.txt").write_text("unfinished")
            raise RuntimeError("stopped half-way")


@pytest.mark.parametrize("point", ["written", "moved", "removing"])
def test_a_kill_at_any_point_leaves_the_old_or_the_new_folder(tmp_path, point):
    target = tmp_path / "model"
    write_folder(target, "old")
    kill_during_write(target, point)
    after_kill = content(target)
    assert after_kill == ("old" if point == "written" else "new")
    fail_inside(target)  # a following call that fails keeps the folder as it was
    assert content(target) == after_kill
    write_folder(target, "third")  # and one that succeeds cleans everything up
    assert content(target) == "third"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_kill_between_two_renames_is_repaired_without_losing_the_new_folder(tmp_path):
    """Where folders cannot be swapped atomically the old one is renamed aside, then the new one
    in: killed between the two, the next call puts the complete new folder at the path instead
    of deleting it as stale."""
    target = tmp_path / "model"
    write_folder(target, "old")
    kill_during_write(target, "moved", mode="rename")
    fail_inside(target)  # even a call that fails repairs the path first
    assert content(target) == "new"
    write_folder(target, "third")
    assert content(target) == "third"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_only_folders_of_dead_processes_are_removed(tmp_path):
    target = tmp_path / "model"
    write_folder(target, "old")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    try:
        live = [
            tmp_path / f".model.{sleeper.pid}-abcd1234.tmp",  # another run, still writing
            tmp_path / f".model.{sleeper.pid}-efgh5678.new.tmp",  # another run, about to swap
            tmp_path / f".model.{os.getppid()}-ijkl9012.tmp",
        ]
        dead = [
            tmp_path / f".model.{finished.pid}-mnop3456.tmp",
            tmp_path / f".model.{finished.pid}-qrst7890.new.tmp",
            tmp_path / f".model.{finished.pid}-uvwx1234.old.tmp",
        ]
        other = tmp_path / f".model.v2.{finished.pid}-abcd1234.tmp"  # of another target
        for folder in [*live, *dead, other]:
            folder.mkdir()
            (folder / "a.txt").write_text("theirs")
        write_folder(target, "new")
        assert content(target) == "new"
        assert all((folder / "a.txt").read_text() == "theirs" for folder in [*live, other])
        assert not any(folder.exists() for folder in dead)
    finally:
        sleeper.kill()
        sleeper.wait()
