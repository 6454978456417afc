"""A simulated week of continuous retraining, driven by direct triggers instead of the clock.

Each day the generator lands that day's events (`data.synthetic.days_per_batch` should be 1), the
`monitor` flow compares them with the champion's training data and triggers `retrain` when they
drifted, and otherwise the nightly `retrain` (the cron schedule) runs on them (here the monitor
only reports, and the day's one retrain is started directly, labelled with whoever started it). From `drift_day` on,
the events drift; on `bad_day` a bad change to params.yaml (a model far too small, one epoch) is
in place for that night's retrain only — the gate must reject what it trains. The story (one row
per day) is returned and written to `.seqops/reports/week.json`; the registry's audit log and the
flow runs' artifacts tell the same story from their side.
"""

from __future__ import annotations

import json
import shutil
from contextlib import contextmanager, nullcontext
from pathlib import Path

import yaml
from prefect import flow, get_run_logger

from seqops.config import load_params, project_paths
from seqops.features.synthetic import write_batch
from seqops.flows.monitor import monitor
from seqops.flows.retrain import retrain
from seqops.models.release.registry import Registry

BAD_CHANGE = {"model": {"hidden_size": 8, "num_layers": 1, "num_heads": 1}, "train": {"epochs": 1}}


@contextmanager
def changed_params(project: Path, change: dict):
    """params.yaml with `change` merged in, restored afterwards whatever happens."""
    path = project / "params.yaml"
    backup = path.with_suffix(".yaml.week-backup")
    shutil.copy(path, backup)
    params = yaml.safe_load(path.read_text())
    for section, values in change.items():
        params[section] = {**params.get(section, {}), **values}
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        yield
    finally:
        shutil.move(backup, path)


def one_day(project: Path, day: int, drift: float, bad: bool) -> dict:
    paths = project_paths(project)
    params = load_params(paths.project / "params.yaml")
    landed = write_batch(params.data.synthetic.model_copy(update={"drift": drift}), paths.landing, day)
    seen = monitor(project=str(project), trigger=False)  # its verdict decides who starts the retrain
    row = {
        "day": day,
        "drift": drift,
        "landed": landed.name,
        "monitor": seen["status"],
        "drift_share": seen.get("drift_share"),
        "bad_params": bad,
        "trigger": "monitor (drift)" if seen["status"] == "drift" else "schedule (nightly)",
    }
    with changed_params(project, BAD_CHANGE) if bad else nullcontext():
        decision = retrain(project=str(project), land=False)
    row.update(
        candidate=decision["candidate"],
        verdict=decision["verdict"],
        served=decision.get("served"),
        champion=decision["champion_after"],
        reasons=decision["reasons"],
        decision_html=decision["reports"]["decision_html"],
    )
    return row


@flow(name="simulate-week", log_prints=True)
def simulate_week(
    project: str = ".", days: int = 7, drift_day: int = 4, bad_day: int | None = 5, drift: float = 0.5
) -> list[dict]:
    """Run the week; returns one row per day (see the module docstring)."""
    logger = get_run_logger()
    root = Path(project).resolve()
    story = []
    for day in range(days):
        row = one_day(root, day, drift if day >= drift_day else 0.0, day == bad_day)
        logger.info(
            "day %d: monitor %s → %s → %s %s (champion %s)",
            day,
            row["monitor"],
            row["trigger"],
            row["candidate"],
            row["verdict"].upper(),
            row["champion"],
        )
        story.append(row)
    paths = project_paths(root)
    out = paths.reports / "week.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"days": story, "audit": Registry.of_project(paths).history()}, indent=2, default=str))
    return story
