"""The registry's commands: `gate`, `promote`, `rollback`, `models [show V]`, `history`
(merged into the `seqops` app by seqops/cli.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from seqops.cli_shared import ActorOpt, ProjectOpt, console, fail, setup

registry_app = typer.Typer()


@registry_app.command()
def gate(
    version: Optional[str] = typer.Argument(None, help="registered version (default: newest)"),
    project: Path = ProjectOpt,
) -> None:
    """Run the promotion gate on a registered candidate."""
    from seqops.models.release.gate import run_gate
    from seqops.models.release.registry import Registry

    params, paths = setup(project)
    registry = Registry(paths, params.registry)
    versions = registry.versions()
    if not versions:
        fail("no registered models yet: run `seqops retrain`")
    version = registry.get(version or versions[-1]["version"])["version"]  # unknown → RegistryError, before any work
    decision = run_gate(registry, version, paths, params)
    print_decision(decision)


def print_decision(decision: dict) -> None:
    colour = "green" if decision["verdict"] == "promote" else "red"
    console.print(
        f"gate: [{colour}]{decision['verdict'].upper()}[/{colour}] {decision['candidate']} (champion: {decision['champion']})"
    )
    for reason in decision["reasons"]:
        console.print(f"  - {reason}")
    reports = decision["reports"]
    console.print(f"  decision report: {reports.get('decision_html', '-')}")
    console.print(
        f"  evidently: {reports['drift_html']}"
        + (f", {reports['prediction_html']}" if reports.get("prediction_html") else "")
    )


def open_registry(project: Path):
    """The project's registry (backend from params.yaml `registry:`)."""
    from seqops.models.release.registry import Registry

    params, paths = setup(project)
    return Registry(paths, params.registry)


@registry_app.command()
def promote(
    version: Optional[str] = typer.Argument(None, help="version (default: the newest gated candidate)"),
    force: bool = typer.Option(False, help="override a gate that did not approve (needs --reason)"),
    reason: str = typer.Option("", help="why; recorded in the audit log with who did it"),
    actor: Optional[str] = ActorOpt,
    project: Path = ProjectOpt,
) -> None:
    """Make a version the champion: one atomic pointer change, audited (`seqops history`)."""
    registry = open_registry(project)
    before = registry.champion()
    champion = registry.promote(version, actor=actor, reason=reason, force=force)
    event = registry.pointer()["event"] or {}
    forced = event.get("action") == "promote-forced" and event.get("version") == champion and champion != before
    console.print(
        f"champion: {champion} (was {before or 'none'})"
        + (" [yellow]— forced over the gate, audited[/yellow]" if forced else "")
    )


@registry_app.command()
def rollback(
    reason: str = typer.Option("", help="why; recorded in the audit log"),
    actor: Optional[str] = ActorOpt,
    project: Path = ProjectOpt,
) -> None:
    """Return to the previous champion (the exact model it served before)."""
    registry = open_registry(project)
    before = registry.champion()
    console.print(f"champion: {registry.rollback(actor=actor, reason=reason)} (rolled back from {before})")


models_app = typer.Typer(
    help="Registered model versions: `seqops models` lists them, `seqops models show V` prints one."
)
registry_app.add_typer(models_app, name="models")


def _role(version: str, pointer: dict) -> str:
    return (
        "champion" if version == pointer["champion"] else "previous champion" if version in pointer["previous"] else ""
    )


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
        table.add_row(
            v["version"],
            v["created_at"],
            (v.get("data_version") or "-")[:12],
            (v.get("params_hash") or "-")[:12],
            v.get("parent_version") or "-",
            f"{ndcg:.4f}" if ndcg is not None else "-",
            (v.get("decision") or {}).get("verdict", "-"),
            _role(v["version"], pointer),
        )
    console.print(table)


@models_app.command("show")
def models_show(
    version: str = typer.Argument(..., help="registered version (see `seqops models`)"), project: Path = ProjectOpt
) -> None:
    """Print one version: lineage, metrics, gate decision with its reasons and reports, audit."""
    from seqops.models.training.evaluate import model_metrics

    registry = open_registry(project)
    meta = registry.get(version)
    facts = Table(show_header=False, box=None)
    for key in (
        "version",
        "created_at",
        "data_version",
        "raw_data_version",
        "features_version",
        "params_hash",
        "parent_version",
        "content_hash",
        "n_items",
        "best_epoch",
        "n_train_sequences",
        "protocol",
    ):
        facts.add_row(key, str(meta.get(key) if meta.get(key) is not None else "-"))
    facts.add_row("role", _role(version, registry.pointer()) or "candidate")
    console.print(facts)
    evaluation = meta.get("eval_metrics") or {}
    rows = [
        (evaluation.get("kind", "model"), model_metrics(evaluation)),
        ("popularity", evaluation.get("popularity") or {}),
    ]
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


@registry_app.command()
def history(project: Path = ProjectOpt) -> None:
    """Show the registry's audit log (who changed the champion, when and why)."""
    table = Table("seq", "time", "actor", "action", "version", "previous", "reason")
    for e in open_registry(project).history():
        action = e["action"] + (f" (gate: {e.get('verdict') or 'none'})" if e["action"] == "promote-forced" else "")
        table.add_row(
            str(e.get("seq", "")), e["time"], e["actor"], action, e["version"], e.get("previous") or "-", e["reason"]
        )
    console.print(table)
