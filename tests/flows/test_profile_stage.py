"""The `profile` DVC stage: `dvc repro` runs `seqops profile` under the champion, records its
outputs and metrics in dvc.lock, and finds it up to date on a second run; the monitor's segment
sizes show the run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from seqops.config import Paths
from seqops.flows.monitor import segment_sizes, segments_markdown
from seqops.io import tool_env
from seqops.models.release.registry import Registry
from tests.serving.conftest import N_CATEGORIES, mini_project, write_state

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def dvc(project: Path, *args: str) -> str:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "dvc"), *args], cwd=project, env=tool_env(), capture_output=True, text=True
    )
    assert done.returncode == 0, f"dvc {' '.join(args)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_dvc_repro_runs_the_profile_stage_under_the_champion(tmp_path):
    project = mini_project(tmp_path / "project")
    paths = Paths(project)
    events = write_state(paths)
    events.assign(value=np.nan, category=[f"c{i % N_CATEGORIES}" for i in events["item_id"]]).to_parquet(paths.events)
    shutil.copytree(paths.home / "models" / "candidate-0", paths.candidate)  # what `seqops train` leaves

    dvc(project, "repro", "--single-item", "profile")
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]["profile"]
    assert {o["path"] for o in lock["outs"]} >= {".seqops/profiles/profiles.parquet", ".seqops/profiles/segments.json"}
    summary = json.loads((paths.home / "profiles" / "segments.json").read_text())
    assert summary["model_version"] == Registry.of_project(paths).champion()
    assert Path(summary["report"]).exists()
    assert "didn't change" in dvc(project, "repro", "--single-item", "profile")
    assert "segments" in dvc(project, "metrics", "show")

    runs = segment_sizes(paths)  # what the monitor's answer and artifact show
    assert [r["sizes"] for r in runs] == [{str(s["segment"]): s["size"] for s in summary["segments"]}]
    assert runs[0]["data_version"] == summary["data_version"][:12]
    assert summary["segments"][0]["label"] in "\n".join(segments_markdown(runs))
