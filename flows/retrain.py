"""The `retrain` flow: land new events → DVC snapshot → `dvc repro` → register → gate → (approved,
`train.refit`: refit on every event up to the cut) → promote or keep the champion → materialize
online features → `dvc repro profile` (profiles and segments under the champion now serving) and
the profiles online. Prefect owns when it runs and the side effects; DVC owns the reproducible DAG (the flow calls `dvc repro`, it does not redo stages).
"""

from __future__ import annotations

import json
import subprocess
from collections import deque
from pathlib import Path

import yaml
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from seqops.config import Params, Paths, load_params, project_paths
from seqops.features import store as feature_store
from seqops.features.profiles import ProfileFiles, write_online
from seqops.features.synthetic import write_batch
from seqops.io import crash_point, file_md5, tool_env
from seqops.models.release.gate import run_gate
from seqops.models.release.registry import Registry
from seqops.models.training.refit import refit_stage
from seqops.serving.logs import adopt_orphans


def run_tool(args: list[str], paths: Paths) -> None:
    """Run a tool in the project, streaming its output into the flow run's log as it comes."""
    logger = get_run_logger()
    logger.info("$ %s", " ".join(args))
    tail: deque[str] = deque(maxlen=60)
    proc = subprocess.Popen(
        args, cwd=paths.project, env=tool_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    for line in proc.stdout:
        if line.strip():
            logger.info("  %s", line.rstrip())
            tail.append(line.rstrip())
    if proc.wait() != 0:
        raise RuntimeError(f"`{' '.join(args)}` failed with exit code {proc.returncode}:\n" + "\n".join(tail))


@task
def land_batch(params: Params, paths: Paths, batch: int | None, drift: float | None) -> Path:
    """Drop a new synthetic batch into the landing folder (real logs arrive there the same way)."""
    if batch is None:
        batch = len(list(paths.raw.glob("batch-*.csv"))) + len(list(paths.landing.glob("batch-*.csv")))
    synthetic = params.data.synthetic
    if drift is not None:
        synthetic = synthetic.model_copy(update={"drift": drift})
    path = write_batch(synthetic, paths.landing, batch)
    get_run_logger().info("landed %s (drift=%.2f)", path.name, synthetic.drift)
    return path


@task
def collect_landing(paths: Paths) -> list[str]:
    """Move landed files into the DVC-tracked raw folder; returns their names. Part files the
    service's dead workers left (events they acknowledged) are adopted first; a live worker's are not."""
    paths.raw.mkdir(parents=True, exist_ok=True)
    adopt_orphans(paths.landing)
    moved = []
    # every complete file, whatever its format (a file still being written is hidden: .name.part)
    for file in sorted(f for f in paths.landing.glob("*") if f.is_file() and not f.name.startswith(".")):
        target = paths.raw / file.name
        if target.exists() and file_md5(target) == file_md5(file):
            file.unlink()  # landed again by a rerun of a run killed after collecting it: already in
            continue
        if target.exists():
            raise FileExistsError(f"{file.name} is already in {paths.raw} with other content: rename the landed file")
        file.rename(target)
        moved.append(file.name)
    get_run_logger().info("collected %d landed file(s): %s", len(moved), ", ".join(moved) or "none")
    return moved


@task(retries=2, retry_delay_seconds=[5, 30], timeout_seconds=900)
def snapshot_data(paths: Paths) -> str:
    """`dvc add` the landing folder: one DVC version per snapshot; returns its hash."""
    run_tool(["dvc", "add", str(paths.raw.relative_to(paths.project))], paths)
    dvc_file = paths.raw.with_suffix(".dvc").read_text()
    return next(line.split(":")[1].strip() for line in dvc_file.splitlines() if "md5" in line)


AFTER_PROMOTE = ("profile",)  # stages that read the champion: reproduced once the gate has decided


@task(timeout_seconds=6 * 3600)  # training is bounded by train.max_minutes / epochs; this is the backstop
def repro(paths: Paths) -> None:
    """`dvc repro` of every stage but AFTER_PROMOTE (named, so that a new stage is never left out)."""
    stages = yaml.safe_load((paths.project / "dvc.yaml").read_text())["stages"]
    run_tool(["dvc", "repro", *(name for name in stages if name not in AFTER_PROMOTE)], paths)


@task(retries=3, retry_delay_seconds=[5, 30, 120], timeout_seconds=1800)  # a remote can be briefly away
def push(paths: Paths, targets: tuple[str, ...] = ()) -> None:
    run_tool(["dvc", "push", *targets], paths)


@task(retries=2, retry_delay_seconds=[5, 30], timeout_seconds=600)  # a shared registry can be briefly away
def register_candidate(paths: Paths, params: Params, raw_version: str) -> str:
    candidate = json.loads((paths.candidate / "seqops.json").read_text())
    metrics = json.loads(paths.eval_metrics.read_text())
    meta = {**candidate, "raw_data_version": raw_version, "eval_metrics": metrics, "actor": "flow:retrain"}
    return Registry(paths, params.registry).register(paths.candidate, meta)


@task(timeout_seconds=1800)
def gate(paths: Paths, params: Params, version: str) -> dict:
    decision = run_gate(Registry(paths, params.registry), version, paths, params)
    logger = get_run_logger()
    logger.info("gate verdict for %s: %s", version, decision["verdict"].upper())
    for reason in decision["reasons"]:
        logger.info("  - %s", reason)
    return decision


@task(timeout_seconds=6 * 3600)
def refit_if_approved(paths: Paths, params: Params, version: str, decision: dict, raw_version: str) -> str:
    """The version to serve: `version` itself, or (train.refit: all | tail, gate approved) its refit on
    every event up to the cut, registered with `refit_of` and the candidate's decision adopted. A crash
    before the promote leaves the old champion served: registering moves no pointer."""
    if decision["verdict"] != "promote" or params.train.refit == "off":
        return version
    registry = Registry(paths, params.registry)
    meta = refit_stage(params, paths, registry.model_dir(version), paths.home / "models" / "refit")
    refit = registry.register(
        paths.home / "models" / "refit",
        {
            **meta,
            "refit_of": version,
            "raw_data_version": raw_version,
            "eval_metrics": registry.get(version).get("eval_metrics"),
            "actor": "flow:retrain",
        },
    )
    registry.adopt_decision(refit, version)
    get_run_logger().info(
        "serving %s: the %s refit of %s (%d sequences, %.1f s)",
        refit,
        meta["refit_mode"],
        version,
        meta["n_train_sequences"],
        meta["refit_seconds"],
    )
    return refit


@task
def promote_if_approved(paths: Paths, params: Params, version: str, decision: dict) -> str | None:
    registry = Registry(paths, params.registry)
    if decision["verdict"] == "promote":
        registry.promote(version, actor="flow:retrain", reason="; ".join(decision["reasons"]))
    return registry.champion()


@task(retries=3, retry_delay_seconds=[5, 30, 120], timeout_seconds=1800)  # the online store can be briefly away
def materialize(paths: Paths, profile: str) -> None:
    feature_store.materialize(paths, profile=profile)


@task(timeout_seconds=1800)
def profile_users(paths: Paths, params: Params) -> dict:
    """Profiles and segments under the champion the gate left serving (`dvc repro profile`), their
    outputs pushed, their rows in the online store; returns the run's summary (segments.json)."""
    run_tool(["dvc", "repro", *AFTER_PROMOTE], paths)
    summary = json.loads(ProfileFiles.of(paths).segments.read_text())
    written = write_online(paths, params.features.store_profile)
    get_run_logger().info(
        "profiles: %d users in %d segments under %s, %d online; report %s",
        summary["users"],
        summary["k"],
        summary["model_version"],
        written,
        summary["report"],
    )
    return summary


def decision_markdown(decision: dict, champion: str | None) -> str:
    metrics = decision["metrics"]
    rows = ["| metric | candidate | champion | popularity |", "|---|---|---|---|"]
    for key in ("ndcg@10", "hr@10", "mrr"):
        champ = metrics["champion"][key] if metrics["champion"] else float("nan")
        rows.append(f"| {key} | {metrics['candidate'][key]:.4f} | {champ:.4f} | {metrics['popularity'][key]:.4f} |")
    reasons = "\n".join(f"- {r}" for r in decision["reasons"])
    return (
        f"## Gate: {decision['verdict'].upper()} {decision['candidate']}\n\n{reasons}\n\n"
        + "\n".join(rows)
        + f"\n\nChampion now: **{champion}**\n\nEvidently report: `{decision['reports']['drift_html']}`\n"
    )


@flow(name="retrain", log_prints=True, timeout_seconds=7 * 3600)
def retrain(project: str = ".", batch: int | None = None, drift: float | None = None, land: bool = True) -> dict:
    """Retrain on the newest data and let the gate decide; returns the gate decision."""
    paths = project_paths(project)
    params = load_params(paths.project / "params.yaml")
    if land:
        land_batch(params, paths, batch, drift)
    collect_landing(paths)
    crash_point("retrain-collected")  # (the crash tests' steps: a rerun of the same command recovers)
    raw_version = snapshot_data(paths)
    repro(paths)
    crash_point("retrain-before-push")
    push(paths)
    feature_store.apply(paths, params.features.store_profile)  # idempotent; the registry serves online reads
    version = register_candidate(paths, params, raw_version)
    decision = gate(paths, params, version)
    served = refit_if_approved(paths, params, version, decision, raw_version)
    crash_point("retrain-before-promote")
    champion = promote_if_approved(paths, params, served, decision)
    materialize(paths, params.features.store_profile)
    profiles = profile_users(paths, params)
    push(paths, AFTER_PROMOTE)
    create_markdown_artifact(decision_markdown(decision, champion), key="gate-decision", description="retrain gate")
    return {
        **decision,
        "served": served,
        "champion_after": champion,
        "raw_data_version": raw_version,
        "profiles": {key: profiles[key] for key in ("users", "k", "model_version", "report")},
    }
