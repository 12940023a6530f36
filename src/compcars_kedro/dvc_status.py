"""``make dvc-status``: a short summary of ``dvc status`` (one line per kind of change).

Plain ``dvc status`` lists every dependency of every stage that never ran: on a fresh clone of
this project (56 stages, matrix stages included) that is hundreds of lines. This groups the
stages: up to date, never run here (no ``dvc.lock`` entry), changed (with what changed), and
the tracked data sources (``*.dvc``)::

    python -m compcars_kedro.dvc_status          # in the project folder
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml


def _dvc() -> str:
    local = Path(sys.executable).with_name("dvc")
    return str(local) if local.exists() else (shutil.which("dvc") or "dvc")


def _stage_names(root: Path) -> list[str]:
    out = subprocess.run([_dvc(), "stage", "list", "--names-only"], cwd=root,
                         capture_output=True, text=True, check=True).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def _locked(root: Path) -> set[str]:
    lock = root / "dvc.lock"
    if not lock.is_file():
        return set()
    return set((yaml.safe_load(lock.read_text()) or {}).get("stages", {}))


def _group(names: list[str]) -> str:
    """``finetuning@*`` (18), data_engineering, ..."""
    groups: dict[str, int] = defaultdict(int)
    for name in names:
        groups[name.split("@")[0] + ("@*" if "@" in name else "")] += 1
    return ", ".join(f"{g} ({n})" if n > 1 else g for g, n in groups.items())


def _what_changed(entries: list[Any]) -> str:
    kinds = []
    for entry in entries:
        if isinstance(entry, str):
            kinds.append(entry)
            continue
        for kind, paths in entry.items():
            detail = ", ".join(f"{p}: {s}" for p, s in list(paths.items())[:3]) \
                if isinstance(paths, dict) else str(paths)
            more = f" (+{len(paths) - 3})" if isinstance(paths, dict) and len(paths) > 3 else ""
            kinds.append(f"{kind} [{detail}{more}]")
    return "; ".join(kinds)


def summarise(root: Path) -> tuple[str, bool]:
    """``(summary text, everything up to date)``."""
    status = json.loads(subprocess.run([_dvc(), "status", "--json"], cwd=root,
                                       capture_output=True, text=True, check=True).stdout
                        or "{}")
    stages, locked = _stage_names(root), _locked(root)
    sources = [k for k in status if k.endswith(".dvc")]
    never = [s for s in stages if s not in locked]
    changed = {s: v for s, v in status.items() if s in locked and not s.endswith(".dvc")}
    lines = [f"DVC: {len(stages) - len(never) - len(changed)} of {len(stages)} stages up to "
             f"date (dvc.lock {'present' if locked else 'absent'})"]
    if never:
        lines.append(f"  never run here (no dvc.lock entry): {_group(never)}")
    for stage, entries in changed.items():
        lines.append(f"  changed: {stage}: {_what_changed(entries)}")
    for source in sources:
        lines.append(f"  data source changed: {source}: {_what_changed(status[source])}")
    if sources:
        lines.append("  `dvc pull` fetches tracked data from the remote (`make sample` regenerates "
                     "the sample, then `dvc add` it if the generator changed)")
    if not (never or changed or sources):
        lines.append("  data and pipelines are up to date")
    elif changed or never:
        lines.append("  `dvc repro <stage>` runs a stage and what it needs; `dvc status <stage>` "
                     "shows every detail")
    return "\n".join(lines), not (never or changed or sources)


def main(argv: list[str] | None = None) -> int:
    text, _ = summarise(Path.cwd())
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
