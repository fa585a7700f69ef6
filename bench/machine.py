"""Facts about the machine a benchmark ran on, recorded next to its results.

Imported by the benchmark scripts (``python bench/NAME.py`` puts ``bench/`` on the path).
Busy processes are recorded because these 2-core machines are often shared: a number
measured beside another job must say so.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "unknown"


def busy_processes(skip: str, *, min_cpu: float = 20.0) -> list[str]:
    """Up to 5 other processes using >= ``min_cpu`` % CPU (``skip``: the benchmark's own)."""
    busy = []
    try:
        ps = subprocess.run(
            ["ps", "-eo", "pcpu,args", "--sort=-pcpu"], capture_output=True, text=True
        )
        for line in ps.stdout.splitlines()[1:6]:
            pcpu, _, cmd = line.strip().partition(" ")
            if float(pcpu) >= min_cpu and skip not in cmd:
                busy.append(f"{pcpu}% {cmd[:120]}")
    except (OSError, ValueError):
        pass
    return busy


def host_facts() -> dict[str, Any]:
    """Cores, CPU model, RAM and Python version."""
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "mem_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
    }
