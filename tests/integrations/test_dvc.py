"""DVC: raw data round trip through a remote, and `dvc repro` of the data stage (conf/dvc env)."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY_LOCAL_PARAMETERS, make_project_copy

pytestmark = pytest.mark.slow

DVC = Path(sys.executable).with_name("dvc")
RAW = "data/01_raw/compcars_sample"  # dvc.yaml's `raw` var


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "DVC_NO_ANALYTICS": "1",
        # dvc.yaml stage commands call `kedro`: the venv's.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.com",
    })
    for key in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        env.pop(key, None)
    return env


def _run(cwd: Path, *cmd: str, timeout: int = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(list(cmd), cwd=cwd, env=_env(), capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, (
        f"{' '.join(cmd)} failed ({result.returncode}) in {cwd}:\n"
        f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def dvc(cwd: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return _run(cwd, str(DVC), *args, timeout=timeout)


def git(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return _run(cwd, "git", *args)


def _init_repo(path: Path) -> None:
    """git + dvc repository with telemetry off, as in the project (.dvc/config)."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q")
    git(path, "config", "user.name", "test")
    git(path, "config", "user.email", "test@example.com")
    git(path, "config", "commit.gpgsign", "false")
    dvc(path, "init", "-q")
    dvc(path, "config", "core.analytics", "false")
    dvc(path, "config", "core.check_update", "false")
    assert "analytics = false" in (path / ".dvc" / "config").read_text()


def _tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_project_dvc_config_is_offline_with_a_default_local_remote() -> None:
    config = (ROOT / ".dvc" / "config").read_text()
    assert "analytics = false" in config and "check_update = false" in config
    assert "remote = local" in config and 'remote "local"' in config
    assert (ROOT / "dvc.yaml").is_file() and (ROOT / "conf" / "dvc" / "catalog.yml").is_file()


def test_add_push_clone_pull_round_trip(tmp_path: Path, tiny_sample: Path) -> None:
    repo, remote, clone = tmp_path / "repo", tmp_path / "remote", tmp_path / "clone"
    _init_repo(repo)
    shutil.copytree(tiny_sample, repo / RAW)
    dvc(repo, "add", RAW)
    assert (repo / f"{RAW}.dvc").is_file()
    assert "/compcars_sample" in (repo / "data" / "01_raw" / ".gitignore").read_text()
    dvc(repo, "remote", "add", "-d", "local", str(remote))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "track the raw sample with DVC")
    # git holds only the pointer file, never the images
    tracked = git(repo, "ls-files").stdout.split()
    assert f"{RAW}.dvc" in tracked and not any(t.startswith(f"{RAW}/") for t in tracked)
    dvc(repo, "push")
    assert any(remote.rglob("*")), "nothing pushed to the remote"

    git(tmp_path, "clone", "-q", str(repo), str(clone))
    assert not (clone / RAW).exists()
    dvc(clone, "pull")
    original, pulled = tiny_sample, clone / RAW
    files = _tree(original)
    assert files and _tree(pulled) == files
    match, mismatch, errors = filecmp.cmpfiles(original, pulled, files, shallow=False)
    assert not mismatch and not errors and len(match) == len(files)
    assert "up to date" in dvc(clone, "status").stdout.lower()


def test_repro_data_engineering_then_skips(tmp_path: Path, tiny_sample: Path) -> None:
    project = make_project_copy(tmp_path / "project", tiny_sample)
    shutil.copy(ROOT / "dvc.yaml", project / "dvc.yaml")
    shutil.copytree(ROOT / "conf" / "dvc", project / "conf" / "dvc")
    # `--env dvc` reads conf/base + conf/dvc only (not conf/local): the tiny settings go there.
    (project / "conf" / "dvc" / "parameters_tiny.yml").write_text(TINY_LOCAL_PARAMETERS)
    shutil.copytree(tiny_sample, project / RAW)
    _init_repo(project)
    shutil.copy(ROOT / ".dvcignore", project / ".dvcignore")
    dvc(project, "add", RAW)
    stages = dvc(project, "stage", "list").stdout
    for name in ("data_engineering", "finetuning@resnet50-arcface", "embeddings@vitb32-ce",
                 "clustering@clip-multisimilarity", "clip_text"):
        assert name in stages

    first = dvc(project, "repro", "data_engineering", timeout=240)
    assert "Running stage 'data_engineering'" in first.stdout, first.stdout[-3000:]
    out = project / "data" / "dvc"
    # unversioned, stable paths (conf/dvc): plain files, no <timestamp>/ folders
    assert (out / "02_intermediate" / "manifest.parquet").is_file()
    assert (out / "02_intermediate" / "rejected_images.csv").is_file()
    assert (out / "05_model_input" / "split_summary.json").is_file()
    assert (out / "05_model_input" / "crops").is_dir()
    assert not (project / "data" / "02_intermediate" / "manifest.parquet").exists()
    lock = (project / "dvc.lock").read_text()
    # params come from conf/base (DVC `params:`); the env's overrides through the conf/dvc dep
    assert "data_engineering:" in lock and "min_images_per_class_per_view: 4" in lock
    assert "path: conf/dvc" in lock

    second = dvc(project, "repro", "data_engineering", timeout=120)
    assert "Stage 'data_engineering' didn't change, skipping" in second.stdout, second.stdout
    assert "Running stage" not in second.stdout
    status = dvc(project, "status", "data_engineering").stdout.lower()
    assert "up to date" in status, status


def _machine_a(tmp_path: Path, tiny_sample: Path) -> Path:
    """A project checkout (git + the project's .dvc/config, dvc.yaml, conf/dvc, Makefile)."""
    a = make_project_copy(tmp_path / "a" / "compcars-kedro", tiny_sample)
    for name in ("dvc.yaml", ".dvcignore", "Makefile"):
        shutil.copy(ROOT / name, a / name)
    shutil.copytree(ROOT / "conf" / "dvc", a / "conf" / "dvc")
    (a / "conf" / "dvc" / "parameters_tiny.yml").write_text(TINY_LOCAL_PARAMETERS)
    (a / "conf" / "local" / "globals.yml").unlink()  # machine-specific: not in git
    shutil.copytree(tiny_sample, a / RAW)
    (a / ".gitignore").write_text((ROOT / ".gitignore").read_text())
    (a / ".venv").symlink_to(Path(sys.executable).parents[1])  # `make` finds .venv/bin/*
    (a / ".venv" / ".installed").exists() or pytest.skip("the venv has no make install stamp")
    git(a, "init", "-q")
    git(a, "config", "user.name", "test")
    git(a, "config", "user.email", "test@example.com")
    git(a, "config", "commit.gpgsign", "false")
    (a / ".git" / "info" / "exclude").write_text(".venv\n")  # the symlink above
    (a / ".dvc").mkdir()
    for name in ("config", ".gitignore"):
        shutil.copy(ROOT / ".dvc" / name, a / ".dvc" / name)
    return a


def make(cwd: Path, *targets: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """The project's Makefile targets, with `install` / `sample` taken as done (-o)."""
    return _run(cwd, "make", "-s", "-o", "install", "-o", "sample", *targets, timeout=timeout)


def test_new_gpu_machine_recipe_push_clone_pull_repro_only_what_changed(
        tmp_path: Path, tiny_sample: Path) -> None:
    """Machine A runs stages and `make dvc-push` (default remote: ../compcars-dvc-remote);
    machine B = a fresh clone with the same remote: `dvc pull` brings raw data, results and the
    weights cache; `dvc repro` then reruns only what is out of date."""
    a = _machine_a(tmp_path, tiny_sample)
    stage = "finetuning@resnet50-ce"
    dvc(a, "add", RAW)  # the tiny sample instead of the committed default sample
    # pretrained weights: what `make weights` leaves in .cache, tracked by `make weights-dvc`
    ckpt = a / ".cache" / "torch" / "hub" / "checkpoints" / "resnet50-standin.pth"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"stand-in weights")
    make(a, "dvc-repro", f"ARGS={stage}", timeout=900)
    make(a, "weights-dvc")
    assert (a / "weights.dvc").is_file()
    make(a, "dvc-push")
    remote = tmp_path / "a" / "compcars-dvc-remote"  # created by the push, next to the checkout
    assert remote.is_dir() and any(remote.rglob("*"))
    git(a, "add", "-A")
    git(a, "commit", "-q", "-m", "results")
    tracked = git(a, "ls-files").stdout.split()
    assert {"dvc.lock", "weights.dvc", f"{RAW}.dvc"} <= set(tracked)
    assert not any(t.startswith(("data/dvc/", ".cache/", f"{RAW}/")) for t in tracked)

    b = tmp_path / "a" / "clone-b"  # same parent: the committed remote url resolves to it
    git(tmp_path, "clone", "-q", str(a), str(b))
    (b / ".venv").symlink_to(Path(sys.executable).parents[1])
    assert not (b / RAW).exists() and not (b / "data" / "dvc").exists()
    before = make(b, "dvc-status").stdout
    assert len(before.splitlines()) <= 8, before
    assert "never run here" in before and "data source changed" in before
    make(b, "dvc-pull")
    assert filecmp.cmp(ckpt, b / ".cache" / "torch" / "hub" / "checkpoints" / ckpt.name,
                       shallow=False)
    assert (b / "data" / "dvc" / "06_models" / "resnet50-ce" / "finetuned_checkpoint").is_dir()
    status = make(b, "dvc-status").stdout
    assert "changed:" not in status and "data source changed" not in status, status
    assert "up to date" in dvc(b, "status", stage).stdout.lower()

    same = make(b, "dvc-repro", f"ARGS={stage}").stdout
    assert "Running stage" not in same, same

    # B changes one finetuning parameter: only that stage reruns, data_engineering is kept
    params = b / "conf" / "base" / "parameters_finetuning.yml"
    params.write_text(params.read_text().replace("ce: {label_smoothing: 0.1}",
                                                 "ce: {label_smoothing: 0.2}"))
    assert "label_smoothing: 0.2" in params.read_text()
    rerun = make(b, "dvc-repro", f"ARGS={stage}", timeout=900).stdout
    assert "Stage 'data_engineering' didn't change, skipping" in rerun, rerun
    assert f"Running stage '{stage}'" in rerun, rerun
    assert "up to date" in dvc(b, "status", stage).stdout.lower()
