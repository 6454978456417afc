"""`seqops serve-flows`: register retrain / materialize / monitor as deployments with schedules
from params.yaml on the Prefect server at PREFECT_API_URL, and serve them from this process."""

from __future__ import annotations

from pathlib import Path

from prefect import serve

from seqops.config import load_params, project_paths
from seqops.flows.materialize import materialize
from seqops.flows.monitor import monitor
from seqops.flows.retrain import retrain


def deployments(project: Path, schedules: bool = True) -> list:
    paths = project_paths(project)
    flows = load_params(paths.project / "params.yaml").flows
    parameters = {"project": str(paths.project)}

    def when(**schedule) -> dict:
        return schedule if schedules else {}

    return [
        # concurrency_limit=1: a scheduled and a monitor-triggered retrain never overlap
        retrain.to_deployment(
            name="retrain", parameters=parameters, concurrency_limit=1, **when(cron=flows.retrain_cron)
        ),
        materialize.to_deployment(
            name="materialize", parameters=parameters, **when(interval=flows.materialize_interval_s)
        ),
        monitor.to_deployment(name="monitor", parameters=parameters, **when(interval=flows.monitor_interval_s)),
    ]


def serve_flows(project: Path, schedules: bool = True) -> None:
    serve(*deployments(project, schedules))
