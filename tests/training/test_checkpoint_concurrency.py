"""Checkpoint saves from concurrent processes never collide; one training run per work dir."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from compcars_kedro.training.checkpoint import (
    Checkpoint,
    WorkDirBusyError,
    load_checkpoint,
    save_checkpoint,
    work_dir_lock,
)


def _saver(folder: str, tag: int, n: int, errors) -> None:
    try:
        for i in range(n):
            ckpt = Checkpoint(model_state={"w": torch.full((4,), float(tag))},
                              meta={"tag": tag, "i": i})
            save_checkpoint(ckpt, folder)
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        errors.put(f"{type(exc).__name__}: {exc}")


def test_concurrent_saves_of_one_folder_never_collide(tmp_path: Path) -> None:
    folder = tmp_path / "last"
    ctx = mp.get_context("fork")
    errors = ctx.Queue()
    procs = [ctx.Process(target=_saver, args=(str(folder), t, 40, errors)) for t in (1, 2, 3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert not found, found[:3]
    ckpt = load_checkpoint(folder)
    assert ckpt.meta["i"] == 39 and torch.equal(ckpt.model_state["w"],
                                                torch.full((4,), float(ckpt.meta["tag"])))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".last.lock", "last"]


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stale = tmp_path / f"best.tmp-{dead}-abc"
    stale.mkdir()
    mine = tmp_path / f"best.tmp-{os.getpid()}-live"  # a live process's save in progress
    mine.mkdir()
    save_checkpoint(Checkpoint(model_state={"w": torch.zeros(1)}), tmp_path / "best")
    assert not stale.exists() and mine.exists() and (tmp_path / "best" / "meta.json").exists()


def test_second_run_in_the_same_work_dir_fails_clearly(tmp_path: Path) -> None:
    with work_dir_lock(tmp_path / "variant"):
        with pytest.raises(WorkDirBusyError, match=rf"in use by pid {os.getpid()}.*work_dir"):
            with work_dir_lock(tmp_path / "variant"):
                pass
    with work_dir_lock(tmp_path / "variant"):  # released after the run
        pass


def test_killed_run_releases_the_work_dir(tmp_path: Path) -> None:
    code = ("import sys, time; from compcars_kedro.training.checkpoint import work_dir_lock\n"
            f"with work_dir_lock({str(tmp_path / 'v')!r}):\n"
            "    print('locked', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(WorkDirBusyError, match=f"pid {proc.pid}"):
            with work_dir_lock(tmp_path / "v"):
                pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    deadline = time.monotonic() + 5
    while True:
        try:
            with work_dir_lock(tmp_path / "v"):
                break
        except WorkDirBusyError:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def _dead_pid() -> str:
    return subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.parametrize("new_written", [True, False])
def test_save_killed_between_its_renames_is_recovered(tmp_path: Path, new_written: bool) -> None:
    """A kill after ``last`` -> ``last.old-<token>`` and before ``last.tmp-<token>`` -> ``last``:
    loading (and resuming, and the next save) puts the new checkpoint back, else the old one."""
    folder = tmp_path / "last"
    save_checkpoint(Checkpoint(model_state={"w": torch.zeros(2)}, meta={"epoch": 1}), folder)
    token = f"{_dead_pid()}-abc"
    folder.rename(tmp_path / f"last.old-{token}")
    if new_written:
        save_checkpoint(Checkpoint(model_state={"w": torch.ones(2)}, meta={"epoch": 2}),
                        tmp_path / f"last.tmp-{token}", atomic=False)
    assert not folder.exists()
    ckpt = load_checkpoint(folder)
    assert ckpt.meta["epoch"] == (2 if new_written else 1)
    save_checkpoint(Checkpoint(model_state={"w": torch.ones(2)}, meta={"epoch": 3}), folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".last.lock", "last"]


def test_a_live_process_swap_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / f"last.old-{os.getpid()}-live").mkdir()  # this process, mid-save
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "last")
    assert (tmp_path / f"last.old-{os.getpid()}-live").is_dir()
