"""`seqops`: the front door. Stage commands (`ingest`, `features`, `train`, `evaluate`, `profile`) are what
`dvc repro` runs; `retrain`, `monitor`, `materialize`, `simulate-week` run the Prefect flows (the
one place outside flows/ that imports them); `gate`, `promote`, `rollback`, `models`, `history`
manage the registry (seqops/cli_registry.py); `serve` starts the BentoML service; `demo` runs the
whole loop twice and serves. `python -m seqops` is the same app.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from seqops.cli_registry import print_decision, registry_app
from seqops.cli_shared import ActorOpt, ExpectedErrors, ProjectOpt, console, fail, setup
from seqops.config import project_paths

app = typer.Typer(
    help="seqops: learn from user-behaviour sequences and serve what is learned.",
    no_args_is_help=True,
    cls=ExpectedErrors,
)
app.add_typer(registry_app)


@app.command()
def generate(
    batch: int = typer.Option(0, help="batch number (time window)"),
    drift: Optional[float] = typer.Option(None, help="override data.synthetic.drift (0..1)"),
    project: Path = ProjectOpt,
) -> None:
    """Write a synthetic batch of raw events into the landing folder."""
    from seqops.features.synthetic import write_batch

    params, paths = setup(project)
    synthetic = params.data.synthetic if drift is None else params.data.synthetic.model_copy(update={"drift": drift})
    console.print(f"wrote {write_batch(synthetic, paths.landing, batch)} (the next retrain collects it)")


@app.command()
def ingest(
    fmt: Optional[str] = typer.Option(
        None,
        "--format",
        help="one-off override of ingest.format: synthetic, taobao, retailrocket, movielens, sasrec or csv",
    ),
    path: Optional[Path] = typer.Option(None, "--path", help="file or folder to read (default: .seqops/data/raw)"),
    project: Path = ProjectOpt,
) -> None:
    """Event logs → canonical events, quarantine, vocabularies, manifest, data report (DVC stage)."""
    import time

    from seqops.config import INGEST_FORMATS
    from seqops.features.ingest import counts_table, write_outputs
    from seqops.features.ingest import ingest as run_ingest
    from seqops.features.lineage import data_report

    params, paths = setup(project)
    if fmt is not None and fmt not in INGEST_FORMATS:
        fail(f"--format {fmt!r}: one of {', '.join(INGEST_FORMATS)}")
    started = time.perf_counter()
    result = run_ingest(path or paths.raw, params.ingest, paths, fmt=fmt)
    manifest = write_outputs(result, paths)
    seconds = time.perf_counter() - started
    console.print(counts_table(result.counts), highlight=False)
    console.print(
        f"{result.format}: {len(result.files)} file(s), {result.counts['read']:,} rows in {seconds:.1f} s "
        f"→ {paths.events} (md5 {manifest['events_md5']}); quarantine → {paths.quarantine}",
        highlight=False,
    )
    if params.ingest.data_report:
        console.print(f"data report: {data_report(paths, manifest['events_md5'])}", highlight=False)


@app.command()
def lineage(
    version: str = typer.Argument(..., help="registered model version (see `seqops models`)"),
    as_json: bool = typer.Option(False, "--json", help="print the lineage as JSON"),
    project: Path = ProjectOpt,
) -> None:
    """What produced a model: data version (and whether DVC has it), source files and hashes, params, metrics."""
    from seqops.features.lineage import lineage as model_lineage
    from seqops.features.lineage import render_lineage
    from seqops.models.release.registry import Registry

    params, paths = setup(project)
    info = model_lineage(Registry(paths, params.registry), version, paths)
    console.print(json.dumps(info, indent=2) if as_json else render_lineage(info), highlight=False, soft_wrap=True)


@app.command()
def features(project: Path = ProjectOpt) -> None:
    """Events → per-user sequence features, then `feast apply` (DVC stage)."""
    from seqops.features import store
    from seqops.features.sequences import write_user_features

    params, paths = setup(project)
    rows = write_user_features(paths.events, paths.user_features, params.features.max_len)
    store.apply(paths, params.features.store_profile)
    console.print(f"{rows} feature rows → {paths.user_features}; feast registry applied")


@app.command()
def train(project: Path = ProjectOpt) -> None:
    """Train the candidate from Feast point-in-time training data (DVC stage)."""
    from seqops.models.training.stages import train_stage

    params, paths = setup(project)
    meta = train_stage(params, paths)
    console.print(
        f"candidate → {paths.candidate} (best epoch {meta['best_epoch']}, warm start from {meta['parent_version']})"
    )


@app.command()
def evaluate(project: Path = ProjectOpt) -> None:
    """Score the candidate and the popularity baseline on held-out last items (DVC stage)."""
    from seqops.models.training.stages import evaluate_stage

    params, paths = setup(project)
    metrics = evaluate_stage(params, paths)
    names = [k for k in metrics["model"] if k != "n_users"]
    table = Table("model", *names, title=metrics["protocol"])
    for label, name in ((metrics["kind"], "model"), ("popularity", "popularity")):
        table.add_row(label, *(f"{metrics[name][k]:.4f}" for k in names))
    console.print(table)
    for head, scores in metrics["heads"].items():
        console.print(f"{head}: " + ", ".join(f"{k}={v:.4f}" for k, v in scores.items() if isinstance(v, float)))


@app.command()
def profile(
    publish: bool = typer.Option(
        False, help="also write the profiles to the Feast online store (the retrain flow does)"
    ),
    project: Path = ProjectOpt,
) -> None:
    """Per-user profiles (RFM, session habits, category interests, the champion's embedding) and
    their segments, with an HTML report per data version (DVC stage)."""
    from seqops.features.profiles import write_online
    from seqops.models.profiles import profile_stage

    params, paths = setup(project)
    summary = profile_stage(params, paths)
    table = Table("segment", "label", "users", "churn", title=f"{summary['users']} users, {summary['method']}")
    for seg in summary["segments"]:
        table.add_row(str(seg["segment"]), seg["label"], str(seg["size"]), f"{seg['churn_rate']:.0%}")
    console.print(table)
    console.print(f"embedding: {summary['model_version']}; report: {summary['report']}", highlight=False)
    if publish:
        console.print(f"{write_online(paths, params.features.store_profile)} profiles written online")


@app.command()
def retrain(
    batch: Optional[int] = typer.Option(None, help="batch to land (default: the next one)"),
    drift: Optional[float] = typer.Option(None, help="drift of the landed batch (0..1)"),
    land: bool = typer.Option(True, help="land a new synthetic batch first"),
    project: Path = ProjectOpt,
) -> None:
    """Run the Prefect retrain flow once (ephemeral Prefect unless PREFECT_API_URL is set)."""
    setup(project)
    from seqops.flows.retrain import retrain as retrain_flow

    print_decision(retrain_flow(project=str(project.resolve()), batch=batch, drift=drift, land=land))


@app.command()
def monitor(
    trigger: bool = typer.Option(True, help="start a retrain when drift passes the threshold"),
    project: Path = ProjectOpt,
) -> None:
    """Run the monitor flow once: fresh landed events vs the champion's training data."""
    setup(project)
    from seqops.flows.monitor import monitor as monitor_flow

    console.print(monitor_flow(project=str(project.resolve()), trigger=trigger))


@app.command()
def materialize(project: Path = ProjectOpt) -> None:
    """Run the materialize flow once (Feast materialize-incremental up to now)."""
    setup(project)
    from seqops.flows.materialize import materialize as materialize_flow

    console.print(f"materialized up to {materialize_flow(project=str(project.resolve()))}")


def served_cell(row: dict) -> str:
    """The version the day's retrain served: its refit (train.refit), the candidate itself, or none."""
    if row["verdict"] != "promote":
        return "-"
    return row.get("served") or row["candidate"]


@app.command("simulate-week")
def simulate_week(
    days: int = typer.Option(7, help="days to simulate (one synthetic batch each)"),
    drift_day: int = typer.Option(4, help="first day whose events drift"),
    bad_day: Optional[int] = typer.Option(5, help="day whose retrain runs a bad params.yaml change (-1: none)"),
    drift: float = typer.Option(0.5, help="drift size from drift_day on"),
    project: Path = ProjectOpt,
) -> None:
    """Drive a week of monitor + retrain with direct triggers; prints the story (set
    data.synthetic.days_per_batch: 1 for day-sized batches)."""
    setup(project)
    from seqops.flows.week import simulate_week as week_flow

    story = week_flow(
        project=str(project.resolve()),
        days=days,
        drift_day=drift_day,
        bad_day=None if bad_day is not None and bad_day < 0 else bad_day,
        drift=drift,
    )
    table = Table(
        "day", "drift", "monitor", "drift share", "retrain by", "candidate", "gate", "served (refit)", "champion after"
    )
    for row in story:
        share = "-" if row["drift_share"] is None else f"{row['drift_share']:.2f}"
        verdict = f"[{'green' if row['verdict'] == 'promote' else 'red'}]{row['verdict']}[/]"
        table.add_row(
            str(row["day"]),
            f"{row['drift']:.1f}" + (" +bad params" if row["bad_params"] else ""),
            row["monitor"],
            share,
            row["trigger"],
            row["candidate"],
            verdict,
            served_cell(row),
            row["champion"],
        )
    console.print(table)
    console.print(f"story: {project_paths(project).reports / 'week.json'}; audit log: `seqops history`")


@app.command("serve-flows")
def serve_flows(
    schedules: bool = typer.Option(True, help="attach the schedules from params.yaml (flows:)"),
    project: Path = ProjectOpt,
) -> None:
    """Deploy retrain/materialize/monitor to the Prefect server at PREFECT_API_URL and serve them."""
    setup(project)
    if not os.environ.get("PREFECT_API_URL"):
        fail("PREFECT_API_URL is not set: start a server (`prefect server start`) and export its API URL")
    from seqops.flows.deploy import serve_flows as serve_all

    serve_all(project.resolve(), schedules)


@app.command()
def serve(
    port: Optional[int] = typer.Option(None, help="port (default: serving.port)"), project: Path = ProjectOpt
) -> None:
    """Start the BentoML service for the champion (`bentoml serve`)."""
    params, paths = setup(project)
    from seqops.serving.launch import serve_command

    os.environ["SEQOPS_PROJECT"] = str(paths.project)
    os.execvp(serve_command(port or params.serving.port)[0], serve_command(port or params.serving.port))


@app.command()
def build(
    source: Path = typer.Option(Path(__file__).resolve().parents[1], help="seqops source tree to package"),
    project: Path = ProjectOpt,
) -> None:
    """Package the champion as a Bento (`bentoml build`); then `bentoml containerize TAG`."""
    from seqops.serving.package import build_bento

    _, paths = setup(project)
    try:
        tag = build_bento(paths, source)
    except RuntimeError as exc:
        fail(str(exc))
    console.print(
        f"built Bento {tag} (BENTOML_HOME={paths.bentoml_home}); containerize with `bentoml containerize {tag}`"
    )


@app.command()
def demo(project: Path = ProjectOpt) -> None:
    """The whole loop, twice (second batch drifted), then serve and ask for a recommendation."""
    setup(project)
    from seqops.flows.demo import run_demo

    run_demo(project.resolve(), console)


@app.command("forget-user")
def forget_user(
    user_id: str = typer.Argument(..., help="the user's raw id, as in the raw data"),
    reason: str = typer.Option(..., help="why (recorded in the erasure audit, without the id)"),
    actor: Optional[str] = ActorOpt,
    purge: bool = typer.Option(False, help="also `purge-snapshots` now (else: after the next retrain)"),
    project: Path = ProjectOpt,
) -> None:
    """Forget a user (right to erasure): erasure list, raw/landing/log files, events, features, online
    store, model reference summaries; audited in .seqops/registry/erasures.jsonl. The next retrain
    trains without them; then `seqops purge-snapshots` drops the old DVC versions."""
    from seqops.features import erasure
    from seqops.models.release.registry import default_actor

    params, paths = setup(project)
    touched = erasure.forget(paths, user_id, reason, actor or default_actor(), params.features.store_profile)
    for name, removed in sorted(touched.files.items()):
        console.print(f"  {name}: {removed:,} row(s)/line(s) removed", highlight=False)
    console.print(f"  online store: {touched.online_rows} row(s) removed")
    for note in touched.notes:
        console.print(f"  note: {note}", highlight=False)
    console.print(
        f"forgotten: {len(touched.files)} file(s) changed; audited in {erasure.audit_path(paths)}; "
        "the next `seqops retrain` trains without them" + ("" if purge else ", then run `seqops purge-snapshots`")
    )
    if purge:
        purge_snapshots(project)


@app.command("purge-snapshots")
def purge_snapshots(project: Path = ProjectOpt) -> None:
    """Drop every DVC version the workspace does not use, from the cache and the remote (`dvc gc
    --workspace [--cloud] --force`): superseded snapshots that still hold a forgotten user go."""
    from seqops.features import erasure

    _, paths = setup(project)
    for name, removed in sorted(erasure.purge_snapshots(paths).files.items()):
        console.print(f"  {name}: {removed:,} line(s) of erased users removed", highlight=False)
    console.print("purged: the DVC cache and remote keep only the workspace's current versions")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
