"""A simulated week, shortened to four days: the first model is promoted, drifted events are
caught by the monitor and the retrain on them is promoted, a bad params.yaml change is rejected by
the gate and the champion stays; the audit log and the story file agree."""

import json

import pytest
import yaml

from seqops.config import Paths
from seqops.models.release.registry import Registry
from tests.conftest import make_project

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]  # train.refit: one more training per promoted day

DAYS = {"data": {"synthetic": {"days_per_batch": 1, "sessions_per_user": 3.0}}}


def test_a_week_of_retraining_tells_its_story(tmp_path, seqops):
    project = make_project(tmp_path / "project", DAYS)
    before = (project / "params.yaml").read_text()
    seqops(project, "simulate-week", "--days", "4", "--drift-day", "2", "--bad-day", "3")
    story = json.loads((Paths(project).reports / "week.json").read_text())
    days = {row["day"]: row for row in story["days"]}

    assert days[0]["verdict"] == "promote" and days[0]["trigger"] == "schedule (nightly)"
    assert days[2]["monitor"] == "drift" and days[2]["trigger"] == "monitor (drift)"
    assert days[2]["verdict"] == "promote" and days[2]["champion"] == days[2]["served"]  # train.refit: the refit serves
    assert days[3]["bad_params"] and days[3]["verdict"] == "reject"
    assert days[3]["champion"] == days[2]["champion"]  # the rejected model never served
    assert (project / "params.yaml").read_text() == before  # the bad change was undone

    registry = Registry.of_project(Paths(project))
    promoted = [e["version"] for e in registry.history() if e["action"] == "promote"]
    assert days[3]["candidate"] not in promoted and days[2]["served"] in promoted
    assert registry.get(days[2]["served"])["refit_of"] == days[2]["candidate"]
    assert registry.champion() == days[2]["served"]
    assert yaml.safe_load((project / "params.yaml").read_text())["model"]["hidden_size"] != 8
