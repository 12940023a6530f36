"""Whether a process still runs: the one check behind every "left by a process that died" cleanup
(folder datasets' ``.partial`` folders, checkpoint temporaries, the log rotator).

No Kedro or torch import, so the training library and the logging setup can use it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def process_start(pid: int) -> str | None:
    """Start time of ``pid`` (clock ticks since boot, Linux ``/proc``); None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields[19]  # state, starttime (field 22)


def owner_alive(owner: dict[str, Any]) -> bool:
    """Whether ``owner`` (``{"pid", "start"?}``) still runs on this host; with a recorded
    ``start`` (see :func:`process_start`) a reused pid does not count."""
    pid = int(owner["pid"])
    if Path("/proc/self/stat").exists():
        start = process_start(pid)
        return start is not None and (owner.get("start") in (None, start))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
