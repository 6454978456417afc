"""`seqops`: the front door. Stage commands (`ingest`, `features`, `train`, `evaluate`) are what
`dvc repro` runs; `retrain` runs the Prefect flow; `promote`/`rollback`/`models`/`history` manage
the registry; `serve` starts the BentoML service; `demo` runs the whole loop twice and serves.

An expected error — the project's state or configuration is not what a command needs (a registry
error, a damaged registry file, a bad params.yaml, an ingest problem, a missing state file) — is
one line on stderr and exit code 1, from one handler around every command (`ExpectedErrors`);
$SEQOPS_TRACEBACK=1 shows the traceback instead. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Optional

import click
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from seqops.config import ConfigError, Params, Paths, load_params, project_paths

TRACEBACK_ENV = "SEQOPS_TRACEBACK"
console = Console()
err_console = Console(stderr=True)


def fail(message: str) -> None:
    """One line on stderr (never wrapped, no markup read from the message), exit code 1."""
    err_console.print(Text.assemble(("error: ", "red"), one_line(message)), soft_wrap=True, highlight=False)
    raise typer.Exit(1)


def one_line(message: str) -> str:
    return "; ".join(line.strip() for line in str(message).splitlines() if line.strip())


def expected_errors() -> tuple[type[BaseException], ...]:
    """Errors that describe the project's state, not a bug (imported when one is raised: the
    ingest module pulls in pandas, and most commands never need it)."""
    from seqops.features.loaders import IngestError
    from seqops.models.release.registry_schema import RegistryError

    return RegistryError, ConfigError, IngestError, FileNotFoundError


def describe(error: BaseException) -> str:
    if isinstance(error, FileNotFoundError) and error.filename:
        return f"{error.filename}: not found (run the stage that writes it first, e.g. `seqops retrain`)"
    return str(error) or type(error).__name__


class ExpectedErrors(TyperGroup):
    """The root command group: every command runs inside its `invoke`, so one handler turns the
    expected errors of all of them into one line and exit code 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except Exception as exc:  # noqa: BLE001 - re-raised below unless it is an expected one
            if not isinstance(exc, expected_errors()) or os.environ.get(TRACEBACK_ENV):
                raise
            fail(describe(exc))


app = typer.Typer(help="seqops: learn from user-behaviour sequences and serve what is learned.", no_args_is_help=True,
                  cls=ExpectedErrors)
ProjectOpt = typer.Option(Path("."), "--project", "-p", help="project folder (holds params.yaml, dvc.yaml, feature_repo/)")


def setup(project: Path) -> tuple[Params, Paths]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "feast.infra.registry.registry", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    paths = project_paths(project)
    os.environ["BENTOML_HOME"] = str(paths.bentoml_home)  # the project's store, never an inherited one
    (paths.home / "prefect").mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", str(paths.home / "prefect"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    return load_params(paths.project / "params.yaml"), paths


@app.command()
def generate(batch: int = typer.Option(0, help="batch number (time window)"),
             drift: Optional[float] = typer.Option(None, help="override data.synthetic.drift (0..1)"),
             project: Path = ProjectOpt) -> None:
    """Write a synthetic batch of raw events into the landing folder."""
    from seqops.features.synthetic import write_batch

    params, paths = setup(project)
    synthetic = params.data.synthetic if drift is None else params.data.synthetic.model_copy(update={"drift": drift})
    console.print(f"wrote {write_batch(synthetic, paths.landing, batch)} (the next retrain collects it)")


@app.command()
def ingest(fmt: Optional[str] = typer.Option(None, "--format", help="one-off override of ingest.format: "
                                             "synthetic, taobao, retailrocket, movielens, sasrec or csv"),
           path: Optional[Path] = typer.Option(None, "--path", help="file or folder to read (default: .seqops/data/raw)"),
           project: Path = ProjectOpt) -> None:
    """Event logs → canonical events, quarantine, vocabularies, manifest, data report (DVC stage)."""
    import time

    from seqops.config import INGEST_FORMATS
    from seqops.features.ingest import counts_table, ingest as run_ingest, write_outputs
    from seqops.features.lineage import data_report, write_manifest

    params, paths = setup(project)
    if fmt is not None and fmt not in INGEST_FORMATS:
        fail(f"--format {fmt!r}: one of {', '.join(INGEST_FORMATS)}")
    started = time.perf_counter()
    result = run_ingest(path or paths.raw, params.ingest, paths, fmt=fmt)
    write_outputs(result, paths)
    manifest = write_manifest(result, paths, params.ingest)
    seconds = time.perf_counter() - started
    console.print(counts_table(result.counts), highlight=False)
    console.print(f"{result.format}: {len(result.files)} file(s), {result.counts['read']:,} rows in {seconds:.1f} s "
                  f"→ {paths.events} (md5 {manifest['events_md5']}); quarantine → {paths.quarantine}", highlight=False)
    if params.ingest.data_report:
        console.print(f"data report: {data_report(paths, manifest['events_md5'])}", highlight=False)


@app.command()
def lineage(version: str = typer.Argument(..., help="registered model version (see `seqops models`)"),
            as_json: bool = typer.Option(False, "--json", help="print the lineage as JSON"),
            project: Path = ProjectOpt) -> None:
    """What produced a model: data version (and whether DVC has it), source files and hashes, params, metrics."""
    from seqops.features.lineage import lineage as model_lineage, render_lineage
    from seqops.models.release.registry import Registry

    _, paths = setup(project)
    info = model_lineage(Registry(paths), version, paths)
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
    console.print(f"candidate → {paths.candidate} (best epoch {meta['best_epoch']}, warm start from {meta['parent_version']})")


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
def gate(version: Optional[str] = typer.Argument(None, help="registered version (default: newest)"), project: Path = ProjectOpt) -> None:
    """Run the promotion gate on a registered candidate."""
    from seqops.models.release.gate import run_gate
    from seqops.models.release.registry import Registry

    params, paths = setup(project)
    registry = Registry(paths)
    versions = registry.versions()
    if not versions:
        fail("no registered models yet: run `seqops retrain`")
    version = registry.get(version or versions[-1]["version"])["version"]  # unknown → RegistryError, before any work
    decision = run_gate(registry, version, paths, params)
    print_decision(decision)


def print_decision(decision: dict) -> None:
    colour = "green" if decision["verdict"] == "promote" else "red"
    console.print(f"gate: [{colour}]{decision['verdict'].upper()}[/{colour}] {decision['candidate']} (champion: {decision['champion']})")
    for reason in decision["reasons"]:
        console.print(f"  - {reason}")
    reports = decision["reports"]
    console.print(f"  decision report: {reports.get('decision_html', '-')}")
    console.print(f"  evidently: {reports['drift_html']}" + (f", {reports['prediction_html']}" if reports.get("prediction_html") else ""))


def open_registry(project: Path):
    """The project's registry (backend from params.yaml `registry:`)."""
    from seqops.models.release.registry import Registry

    _, paths = setup(project)
    return Registry(paths)


ActorOpt = typer.Option(None, help="who acts (default: $SEQOPS_ACTOR, else the OS user); recorded in the audit log")


@app.command()
def promote(version: Optional[str] = typer.Argument(None, help="version (default: the newest gated candidate)"),
            force: bool = typer.Option(False, help="override a gate that did not approve (needs --reason)"),
            reason: str = typer.Option("", help="why; recorded in the audit log with who did it"),
            actor: Optional[str] = ActorOpt, project: Path = ProjectOpt) -> None:
    """Make a version the champion: one atomic pointer change, audited (`seqops history`)."""
    registry = open_registry(project)
    before = registry.champion()
    champion = registry.promote(version, actor=actor, reason=reason, force=force)
    event = registry.pointer()["event"] or {}
    forced = event.get("action") == "promote-forced" and event.get("version") == champion and champion != before
    console.print(f"champion: {champion} (was {before or 'none'})" + (" [yellow]— forced over the gate, audited[/yellow]" if forced else ""))


@app.command()
def rollback(reason: str = typer.Option("", help="why; recorded in the audit log"), actor: Optional[str] = ActorOpt,
             project: Path = ProjectOpt) -> None:
    """Return to the previous champion (the exact model it served before)."""
    registry = open_registry(project)
    before = registry.champion()
    console.print(f"champion: {registry.rollback(actor=actor, reason=reason)} (rolled back from {before})")


models_app = typer.Typer(help="Registered model versions: `seqops models` lists them, `seqops models show V` prints one.")
app.add_typer(models_app, name="models")


def _role(version: str, pointer: dict) -> str:
    return "champion" if version == pointer["champion"] else "previous champion" if version in pointer["previous"] else ""


@models_app.callback(invoke_without_command=True)
def models(ctx: typer.Context, project: Path = ProjectOpt) -> None:
    """List registered model versions (newest last)."""
    if ctx.invoked_subcommand is not None:
        return
    from seqops.models.training.evaluate import model_metrics

    registry = open_registry(project)
    pointer = registry.pointer()
    table = Table("version", "created", "data version", "params", "parent", "ndcg@10", "gate", "role")
    for v in registry.versions():
        ndcg = model_metrics(v.get("eval_metrics") or {}).get("ndcg@10")
        table.add_row(v["version"], v["created_at"], (v.get("data_version") or "-")[:12], (v.get("params_hash") or "-")[:12],
                      v.get("parent_version") or "-", f"{ndcg:.4f}" if ndcg is not None else "-",
                      (v.get("decision") or {}).get("verdict", "-"), _role(v["version"], pointer))
    console.print(table)


@models_app.command("show")
def models_show(version: str = typer.Argument(..., help="registered version (see `seqops models`)"),
                project: Path = ProjectOpt) -> None:
    """Print one version: lineage, metrics, gate decision with its reasons and reports, audit."""
    from seqops.models.training.evaluate import model_metrics

    registry = open_registry(project)
    meta = registry.get(version)
    facts = Table(show_header=False, box=None)
    for key in ("version", "created_at", "data_version", "raw_data_version", "features_version", "params_hash",
                "parent_version", "content_hash", "n_items", "best_epoch", "n_train_sequences", "protocol"):
        facts.add_row(key, str(meta.get(key) if meta.get(key) is not None else "-"))
    facts.add_row("role", _role(version, registry.pointer()) or "candidate")
    console.print(facts)
    evaluation = meta.get("eval_metrics") or {}
    rows = [(evaluation.get("kind", "model"), model_metrics(evaluation)), ("popularity", evaluation.get("popularity") or {})]
    if rows[0][1]:
        names = [k for k in rows[0][1] if k != "n_users"]
        table = Table("model", *names, title="evaluate stage")
        for label, scores in rows:
            table.add_row(label, *(f"{scores[k]:.4f}" if k in scores else "-" for k in names))
        console.print(table)
    decision = meta.get("decision")
    if decision and "candidate" in decision:
        print_decision(decision)
    else:
        console.print(f"gate: {(decision or {}).get('verdict', 'not gated yet')}")
    table = Table("seq", "time", "actor", "action", "reason", title=f"audit entries for {version}")
    for e in registry.history():
        if e["version"] == version:
            table.add_row(str(e.get("seq", "")), e["time"], e["actor"], e["action"], e["reason"])
    console.print(table)


@app.command()
def history(project: Path = ProjectOpt) -> None:
    """Show the registry's audit log (who changed the champion, when and why)."""
    table = Table("seq", "time", "actor", "action", "version", "previous", "reason")
    for e in open_registry(project).history():
        action = e["action"] + (f" (gate: {e.get('verdict') or 'none'})" if e["action"] == "promote-forced" else "")
        table.add_row(str(e.get("seq", "")), e["time"], e["actor"], action, e["version"], e.get("previous") or "-", e["reason"])
    console.print(table)


@app.command()
def retrain(batch: Optional[int] = typer.Option(None, help="batch to land (default: the next one)"),
            drift: Optional[float] = typer.Option(None, help="drift of the landed batch (0..1)"),
            land: bool = typer.Option(True, help="land a new synthetic batch first"),
            project: Path = ProjectOpt) -> None:
    """Run the Prefect retrain flow once (ephemeral Prefect unless PREFECT_API_URL is set)."""
    setup(project)
    from seqops.flows.retrain import retrain as retrain_flow

    print_decision(retrain_flow(project=str(project.resolve()), batch=batch, drift=drift, land=land))


@app.command()
def monitor(trigger: bool = typer.Option(True, help="start a retrain when drift passes the threshold"),
            project: Path = ProjectOpt) -> None:
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


@app.command("simulate-week")
def simulate_week(days: int = typer.Option(7, help="days to simulate (one synthetic batch each)"),
                  drift_day: int = typer.Option(4, help="first day whose events drift"),
                  bad_day: Optional[int] = typer.Option(5, help="day whose retrain runs a bad params.yaml change (-1: none)"),
                  drift: float = typer.Option(0.5, help="drift size from drift_day on"),
                  project: Path = ProjectOpt) -> None:
    """Drive a week of monitor + retrain with direct triggers; prints the story (set
    data.synthetic.days_per_batch: 1 for day-sized batches)."""
    setup(project)
    from seqops.flows.week import simulate_week as week_flow

    story = week_flow(project=str(project.resolve()), days=days, drift_day=drift_day,
                      bad_day=None if bad_day is not None and bad_day < 0 else bad_day, drift=drift)
    table = Table("day", "drift", "monitor", "drift share", "retrain by", "candidate", "gate", "champion after")
    for row in story:
        share = "-" if row["drift_share"] is None else f"{row['drift_share']:.2f}"
        verdict = f"[{'green' if row['verdict'] == 'promote' else 'red'}]{row['verdict']}[/]"
        table.add_row(str(row["day"]), f"{row['drift']:.1f}" + (" +bad params" if row["bad_params"] else ""),
                      row["monitor"], share, row["trigger"], row["candidate"], verdict, row["champion"])
    console.print(table)
    console.print(f"story: {project_paths(project).reports / 'week.json'}; audit log: `seqops history`")


@app.command("serve-flows")
def serve_flows(schedules: bool = typer.Option(True, help="attach the schedules from params.yaml (flows:)"),
                project: Path = ProjectOpt) -> None:
    """Deploy retrain/materialize/monitor to the Prefect server at PREFECT_API_URL and serve them."""
    setup(project)
    if not os.environ.get("PREFECT_API_URL"):
        fail("PREFECT_API_URL is not set: start a server (`prefect server start`) and export its API URL")
    from seqops.flows.deploy import serve_flows as serve_all

    serve_all(project.resolve(), schedules)


@app.command()
def serve(port: Optional[int] = typer.Option(None, help="port (default: serving.port)"), project: Path = ProjectOpt) -> None:
    """Start the BentoML service for the champion (`bentoml serve`)."""
    params, paths = setup(project)
    from seqops.serving.launch import serve_command

    os.environ["SEQOPS_PROJECT"] = str(paths.project)
    os.execvp(serve_command(port or params.serving.port)[0], serve_command(port or params.serving.port))


@app.command()
def build(source: Path = typer.Option(Path(__file__).resolve().parents[1], help="seqops source tree to package"),
          project: Path = ProjectOpt) -> None:
    """Package the champion as a Bento (`bentoml build`); then `bentoml containerize TAG`."""
    from seqops.serving.package import build_bento

    _, paths = setup(project)
    try:
        tag = build_bento(paths, source)
    except RuntimeError as exc:
        fail(str(exc))
    console.print(f"built Bento {tag} (BENTOML_HOME={paths.bentoml_home}); containerize with `bentoml containerize {tag}`")


@app.command()
def demo(project: Path = ProjectOpt) -> None:
    """The whole loop, twice (second batch drifted), then serve and ask for a recommendation."""
    setup(project)
    from seqops.flows.demo import run_demo

    run_demo(project.resolve(), console)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
