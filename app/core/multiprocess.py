"""Prometheus multiprocess mode, set up before prometheus-client is imported (which is when it picks
the mode: a process, or a child forked from it, that imported it earlier keeps single-process values).
Kept apart from ``app/core/metrics.py`` so that the CLI can call it without importing the client."""

from __future__ import annotations

import os
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_metrics_dir(var_dir: Path, name: str) -> Path:
    """Put this process and its children in multiprocess mode: in ``PROMETHEUS_MULTIPROC_DIR`` if set,
    otherwise in ``var_dir/metrics/{name}``. Its value files are deleted first: values left by an
    earlier run would be added to this one's."""
    path = Path(os.environ.get(MULTIPROC_ENV) or var_dir / "metrics" / name)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROC_ENV] = str(path)
    return path
