"""`seqops build`: package the champion as a Bento (code as a wheel, the pinned stack, the model)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from seqops.config import Paths
from seqops.models.release.registry import MODEL_NAME, Registry

SERVICE = "seqops.serving.service:Recommender"
PINNED_ENV = "SEQOPS_MODEL_VERSION"  # set in the Bento: the version packaged with it
SNAPSHOT_DIR = "dist/serving_state"  # the Bento's copy of the vocabularies (dist/ is git-ignored)


def build_wheel(paths: Paths, source: Path) -> Path:
    out = paths.project / "dist"  # BentoML refuses files under hidden folders like .seqops/
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(source)], check=True)
    return max(out.glob("seqops-*.whl"), key=lambda p: p.stat().st_mtime)


def snapshot_vocab(paths: Paths) -> Path:
    """Copy the ingest vocabularies next to the Bento sources (BentoML skips hidden folders like
    .seqops/): a container without the project's state still maps raw user/item ids."""
    out = paths.project / SNAPSHOT_DIR / "vocab"
    out.mkdir(parents=True, exist_ok=True)
    for name in ("users.parquet", "items.parquet"):
        if (paths.vocab / name).exists():
            shutil.copy(paths.vocab / name, out / name)
    return out


def write_bentofile(paths: Paths, version: str, wheel: Path) -> Path:
    lock = paths.project / "requirements" / "lock.txt"
    python = {"wheels": [str(wheel.relative_to(paths.project))]}
    if lock.exists():
        python["requirements_txt"] = str(lock.relative_to(paths.project))
    spec = {
        "service": SERVICE,
        "name": "seqops-recommender",
        "labels": {"model_version": version},
        "include": [
            "params.yaml",
            "feature_repo/*.py",
            "feature_repo/*.yaml",
            "feature_repo/profiles/*/*.yaml",
            f"{SNAPSHOT_DIR}/vocab/*.parquet",
        ],
        "exclude": [".seqops/", ".venv/", ".git/", ".dvc/"],
        "python": python,
        "models": [f"{MODEL_NAME}:{version}"],
        # no registry in the container: serve the packaged version (a mounted project's registry wins)
        "envs": [{"name": "SEQOPS_PROJECT", "value": "."}, {"name": PINNED_ENV, "value": version}],
    }
    path = paths.project / "bentofile.generated.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def build_bento(paths: Paths, source: Path) -> str:
    """Build a Bento for the current champion; returns the Bento tag."""
    version = Registry.of_project(paths).champion()
    if version is None:
        raise RuntimeError("no champion to package: run the retrain flow (or `seqops promote`) first")
    snapshot_vocab(paths)
    bentofile = write_bentofile(paths, version, build_wheel(paths, source))
    bentoml = str(Path(sys.executable).parent / "bentoml")
    # the project's model store, whatever $BENTOML_HOME the caller inherited
    env = {**os.environ, "BENTOML_HOME": str(paths.bentoml_home)}
    done = subprocess.run(
        [bentoml, "build", "-f", str(bentofile), "-o", "tag", str(paths.project)],
        cwd=paths.project,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"bentoml build failed:\n{done.stderr[-3000:]}")
    return done.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
