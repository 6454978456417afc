"""`dvc repro` trains whichever model params.yaml names: each kind (and a multi-task SASRec under
the temporal protocol) goes through the real train and evaluate stages on one small project."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from seqops.config import Paths
from seqops.io import tool_env
from tests.conftest import make_project

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

SETTINGS = {
    "markov": ({"kind": "markov"}, {}, {}),
    "bert4rec": ({"kind": "bert4rec"}, {}, {}),
    "gru4rec": ({"kind": "gru4rec", "num_layers": 1}, {}, {}),
    "lm": ({"kind": "lm", "lm_events": 5}, {"epochs": 1, "batch_size": 32, "lr": 0.0001}, {}),
    "sasrec-heads-temporal": (
        {"kind": "sasrec", "heads": ["next_item", "next_action", "churn"]},
        {},
        {"protocol": "temporal", "temporal_share": 0.2},
    ),
}


def repro(project: Path, name: str, text_model: str) -> dict:
    model, train, evaluate = SETTINGS[name]
    if model["kind"] == "lm":  # a tiny local BERT: this test checks the plumbing, test_lm the model
        model = {**model, "text_model": text_model}
    params = yaml.safe_load((project / "params.yaml").read_text())
    for section, values in (("model", model), ("train", train), ("evaluate", evaluate)):
        params[section] = {**params[section], **values}
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    dvc = str(Path(sys.executable).parent / "dvc")  # up to evaluate: the profile stage is test_profile_stage's
    done = subprocess.run([dvc, "repro", "evaluate"], cwd=project, env=tool_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(Paths(project).eval_metrics.read_text())


def test_every_kind_trains_through_dvc_repro(tmp_path, seqops, text_model):
    project = make_project(tmp_path / "project")
    seqops(project, "generate", "--batch", "0")
    paths = Paths(project)
    paths.raw.mkdir(parents=True, exist_ok=True)
    for landed in paths.landing.glob("*.csv"):  # what the retrain flow's collect step does
        landed.rename(paths.raw / landed.name)
    for name in SETTINGS:
        metrics = repro(project, name, text_model)
        kind = SETTINGS[name][0]["kind"]
        assert metrics["kind"] == kind and metrics["model"]["n_users"] > 0, name
        meta = json.loads((paths.candidate / "seqops.json").read_text())
        assert meta["kind"] == kind and meta["model_class"].startswith("seqops.models."), name
        if name == "sasrec-heads-temporal":
            assert "temporal" in metrics["protocol"]
            assert {"accuracy", "f1", "auc"} <= set(metrics["heads"]["next_action"]) and "auc" in metrics["heads"][
                "churn"
            ]
        if kind != "markov":
            assert (paths.candidate / "training_curve.png").exists()
