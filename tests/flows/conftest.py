"""Fixtures the flow tests share: the real `seqops` CLI run in a project."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from seqops.io import tool_env


def run_seqops(project: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [str(Path(sys.executable).parent / "seqops"), *args, "--project", str(project)]
    done = subprocess.run(cmd, cwd=project, env=tool_env(), capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done


@pytest.fixture
def seqops() -> Callable[..., subprocess.CompletedProcess]:
    """`seqops(project, "retrain", ...)`: the installed CLI; fails the test with its output on error."""
    return run_seqops
