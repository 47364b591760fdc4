"""Which Beam runners kmsbeam jobs run on, and which they refuse (see docs/RUNNERS.md)."""

from __future__ import annotations

from typing import Any

__all__ = ["runner_name"]


def runner_name(runner: Any) -> str | None:
    """The class name of a ``--runner`` value as Beam resolves it (``dask``, ``DaskRunner`` and
    ``apache_beam.runners.dask.dask_runner.DaskRunner`` are all ``DaskRunner``); None when no
    runner was named."""
    if runner is None:
        return None
    if not isinstance(runner, str):
        return type(runner).__name__ if not isinstance(runner, type) else runner.__name__
    from apache_beam.runners.runner import _RUNNER_MAP

    key = runner.lower()
    qualified = _RUNNER_MAP.get(key, _RUNNER_MAP.get(key + "runner", runner))
    return str(qualified).rsplit(".", 1)[-1]
