"""What every `seqops` command shares: the console, one-line errors, the project option, and the
set-up each command runs first (logging, the project's BentoML and Prefect homes, params.yaml).

An expected error — the project's state or configuration is not what a command needs (a registry
error, a damaged registry file, a bad params.yaml, an ingest problem, a missing state file) — is
one line on stderr and exit code 1, from one handler around every command (`ExpectedErrors`);
$SEQOPS_TRACEBACK=1 shows the traceback instead. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import click
import typer
from rich.console import Console
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
    from seqops.features.layouts import IngestError
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


ProjectOpt = typer.Option(
    Path("."), "--project", "-p", help="project folder (holds params.yaml, dvc.yaml, feature_repo/)"
)


def setup(project: Path) -> tuple[Params, Paths]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "feast.infra.registry.registry", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    paths = project_paths(project)
    os.environ["BENTOML_HOME"] = str(paths.bentoml_home)  # the project's store, never an inherited one
    (paths.home / "prefect").mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", str(paths.home / "prefect"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # the ephemeral server migrates its SQLite database at start: > 20 s (Prefect's default) on a busy 2-core box
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    return load_params(paths.project / "params.yaml"), paths


ActorOpt = typer.Option(None, help="who acts (default: $SEQOPS_ACTOR, else the OS user); recorded in the audit log")
