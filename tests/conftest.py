"""Shared fixtures: a real seqops project (git + DVC + Feast repo) in a temp folder, with small params."""

from __future__ import annotations

import copy
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

# One compute thread per test process (inherited by the CLI, dvc and service subprocesses): `make test`
# runs two workers on two cores, and torch's default of a thread per core then oversubscribes them —
# a toy training step waits on spinning threads (measured: 52 s with 2 threads vs 4 s with 1 on a
# loaded machine). Set before anything imports torch.
for _threads in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_threads, "1")

REPO = Path(__file__).resolve().parents[1]
PROJECT_FILES = ["params.yaml", "dvc.yaml", "feature_repo", "features", "models", "requirements", ".dvc/config"]

SMALL = {
    "data": {"synthetic": {"n_users": 300, "n_items": 150, "n_categories": 8, "sessions_per_user": 3.0}},
    "features": {"max_len": 20},
    "model": {"hidden_size": 32, "num_layers": 1, "num_heads": 2},
    "train": {"epochs": 4, "batch_size": 64, "patience": 2},
    "gate": {"min_eval_users": 20},
}


def deep_update(base: dict, extra: dict) -> dict:
    for key, value in extra.items():
        base[key] = deep_update(base.get(key, {}), value) if isinstance(value, dict) else value
    return base


def make_project(root: Path, overrides: dict | None = None) -> Path:
    """Copy the project files into `root`, apply param overrides, `git init` + `dvc init`."""
    root.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src, dst = REPO / name, root / name
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        elif name != ".dvc/config":
            shutil.copy(src, dst)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    (root / "params.yaml").write_text(
        yaml.safe_dump(deep_update(params, deep_update(copy.deepcopy(SMALL), overrides or {})))
    )
    shutil.copy(REPO / ".gitignore", root / ".gitignore")
    bin_dir = Path(sys.executable).parent
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([str(bin_dir / "dvc"), "init", "-q"], cwd=root, check=True)
    shutil.copy(REPO / ".dvc" / "config", root / ".dvc" / "config")
    return root


def seqops_command(project: Path, *args: str) -> list[str]:
    """The installed `seqops` CLI, run on `project`."""
    return [str(Path(sys.executable).parent / "seqops"), *args, "--project", str(project)]


def dvc(project: Path, *args: str) -> str:
    """The real `dvc` in `project`; fails the test with its output on an error; returns stdout."""
    from seqops.io import tool_env

    done = subprocess.run(
        [str(Path(sys.executable).parent / "dvc"), *args], cwd=project, env=tool_env(), capture_output=True, text=True
    )
    assert done.returncode == 0, f"dvc {' '.join(args)}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def run_killed_at(step: str, cmd: list[str], cwd: Path, timeout: float = 1200) -> str:
    """Run `cmd` with $SEQOPS_CRASH_AT=`step`; it must die by SIGKILL there (`seqops.io.crash_point`);
    returns its output. It runs in a process group of its own, and whatever it started and left
    running (Prefect's ephemeral API server, a tool it was waiting on) is SIGKILLed after it, as in
    a power cut. (Its output goes to a file: an orphan holding a pipe open would block the read.)"""
    import tempfile

    from seqops.io import CRASH_ENV, tool_env

    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env={**tool_env(), CRASH_ENV: step},
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            proc.wait(timeout=timeout)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        out.seek(0)
        output = out.read()
    assert proc.returncode == -signal.SIGKILL, f"not killed at {step} (exit {proc.returncode}):\n{output[-5000:]}"
    return output


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "project")


@pytest.fixture(scope="module", autouse=True)
def _keep_bentoml_home():
    """Registry.of_project() sets $BENTOML_HOME for the process (setdefault) to its project's store; restore it
    after each module so later tests (and the tools they start) do not inherit this module's store."""
    import os

    before = os.environ.get("BENTOML_HOME")
    yield
    if before is None:
        os.environ.pop("BENTOML_HOME", None)
    else:
        os.environ["BENTOML_HOME"] = before


def assert_same_scores(got, want) -> None:
    """Scores equal up to float32 rounding: a matmul against a table of another shape (grown items)
    or another kernel choice may sum in another order, so bitwise equality is CPU-dependent."""
    import torch

    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="session")
def text_model(tmp_path_factory) -> str:
    """A random 2-layer BERT with the bundled MiniLM tokenizer: a local text model that loads in ms."""
    import torch  # here, not at the top: after the thread settings above
    from transformers import BertConfig, BertModel

    from seqops.models.nets.text import load_tokenizer

    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
    )
    BertModel(config).save_pretrained(folder)
    load_tokenizer("all-MiniLM-L6-v2").save_pretrained(folder)
    return str(folder)
