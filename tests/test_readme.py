"""Every ``kedro run`` command of README.md runs as written, on the tiny sample.

The commands are read from README.md's ```bash blocks and whole-command inline code spans (new
ones are picked up automatically)
and run in README order with the real ``kedro`` CLI in one project copy, so a command may rely on
what an earlier one produced (e.g. ``--pipelines finetuning`` after the whole study):

* the project copy is the tiny end-to-end run's project (the README's first command, plain
  ``kedro run``, is that run), with conf/local = the tiny sample + short CPU settings;
* ``--env compcars`` commands: conf/local does not apply there, so the real env runs with its
  own parameters except the raw data (``COMPCARS_ROOT`` = the tiny sample, as the README says),
  stand-in pretrained weights in a temporary ``TORCH_HOME`` and a short run
  (:data:`COMPCARS_RUN_LENGTH` appended to ``--params``);
* ``require_gpu=true`` commands run for real on a CUDA machine; without one they must refuse
  before any node runs, with the message saying why.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow
logger = logging.getLogger(__name__)

#: Appended to `--params` of `--env compcars` commands: the run length (1 epoch of batch 4)
#: and the class filter sized for the tiny sample (compcars keeps classes with 5+ per view).
COMPCARS_RUN_LENGTH = ("training.epochs=1,training.batch_size=4,training.num_workers=0,"
                       "data_engineering.min_images_per_class_per_view=3,"
                       "data_engineering.unseen_fraction=0.34,"
                       "training.sampler.m_per_class=2,embeddings.batch_size=32,"
                       "data_engineering.num_workers=1,data_engineering.crop.num_workers=1,"
                       "clustering.reducers=[pca],reporting.scatter.reducer=pca")


#: conf/local/parameters_grid.yml: the sample studies, one seed / two layer counts.
TINY_STUDIES = """
grid: {models: [resnet18], losses: [ce, multisimilarity], views: [front+rear], seeds: [0],
       split_seeds: [42]}
clip_layers: {layers: [1, 12]}
"""


def readme_kedro_run_commands(readme: Path = ROOT / "README.md") -> list[list[str]]:
    """``kedro run`` argument lists of README's commands, in README order, without repeats:
    every line of its bash blocks, and inline code spans that are a whole command (no ``...`` /
    ``<placeholder>``; a span may wrap across lines of its paragraph)."""
    commands: list[list[str]] = []

    def add(words: list[str]) -> None:
        if len(words) >= 2 and Path(words[0]).name == "kedro" and words[1] == "run" \
                and words[1:] not in commands:
            commands.append(words[1:])

    in_bash, paragraph = False, []
    for line in [*readme.read_text().splitlines(), ""]:
        fence = line.strip().startswith("```")
        if in_bash and not fence:
            add(shlex.split(line, comments=True))
            continue
        if fence or not line.strip():
            text = " ".join(paragraph)
            for span in re.findall(r"`((?:\.venv/bin/)?kedro run[^`]*)`", text):
                if "..." not in span and "…" not in span and "<" not in span:
                    add(shlex.split(span))
            paragraph = []
            if fence:
                in_bash = line.strip() in ("```bash", "```sh", "```shell") and not in_bash
            continue
        paragraph.append(line.strip())
    return commands


def test_readme_commands_are_found() -> None:
    commands = readme_kedro_run_commands()
    assert ["run"] in commands
    assert any("--env" in c for c in commands)
    assert ["run", "--pipelines", "finetuning", "--params", "model=clip,loss=clip,views=front"] \
        in commands


def _with_run_length(args: list[str]) -> list[str]:
    args = list(args)
    if "--params" in args:
        i = args.index("--params") + 1
        args[i] = f"{args[i]},{COMPCARS_RUN_LENGTH}"
    else:
        args += ["--params", COMPCARS_RUN_LENGTH]
    return args


def test_every_readme_kedro_run_command_works(tiny_run, tiny_sample: Path,
                                              tmp_path: Path) -> None:
    import torch

    from tests.realconfig.conftest import save_torchvision_standins

    first, result = tiny_run  # README's `kedro run` on the tiny sample
    assert result.returncode == 0, result.stderr[-3000:]
    project = tmp_path / "project"
    shutil.copytree(first, project, symlinks=True)
    local = project / "conf" / "local"  # the tiny sample's settings: one epoch, small studies
    tiny = (local / "parameters.yml").read_text()
    assert "  epochs: 2\n" in tiny
    (local / "parameters.yml").write_text(tiny.replace("  epochs: 2\n", "  epochs: 1\n"))
    (local / "parameters_grid.yml").write_text(TINY_STUDIES)
    torch_home = tmp_path / "torch"
    save_torchvision_standins(torch_home, {"resnet50": "IMAGENET1K_V2"})
    kedro = Path(sys.executable).with_name("kedro")
    cuda = torch.cuda.is_available()
    failures = []
    for args in readme_kedro_run_commands():
        if args == ["run"]:
            continue  # = tiny_run
        env = dict(os.environ)
        if "--env" in args and args[args.index("--env") + 1] == "compcars":
            env.update(COMPCARS_ROOT=str(tiny_sample), TORCH_HOME=str(torch_home))
            args = _with_run_length(args)
        gpu_only = any(re.search(r"require_gpu=(true|1)", a) for a in args)
        done = subprocess.run([str(kedro), *args], cwd=project, env=env, capture_output=True,
                              text=True, timeout=900)
        out = " ".join((done.stdout + done.stderr).split())
        if gpu_only and not cuda:
            ok = done.returncode != 0 and "require_gpu is set" in out
        else:
            ok = done.returncode == 0
        logger.info("README command: kedro %s -> %s", shlex.join(args), "ok" if ok else "FAILED")
        if not ok:
            failures.append(f"kedro {shlex.join(args)} -> {done.returncode}:\n{out[-3000:]}")
    assert not failures, "\n\n".join(failures)
