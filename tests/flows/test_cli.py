"""The installed `seqops` CLI on a project whose state is not what a command needs: a damaged
registry, a version argument that is not a version, an unknown version, an unreachable registry with
a password in its DSN, a bad params.yaml, a missing state file. Each answer is one line on stderr and
exit code 1 — never a traceback, never a secret."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from seqops.config import Paths
from seqops.io import tool_env
from seqops.models.release.registry import Registry

SECRET = "s3cret-pw"


def cli(project: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [str(Path(sys.executable).parent / "seqops"), *args, "--project", str(project)]
    return subprocess.run(
        cmd, cwd=project, env={**tool_env(), "COLUMNS": "80", **(env or {})}, capture_output=True, text=True
    )


def assert_one_line_error(done: subprocess.CompletedProcess, *expected: str) -> str:
    """Exit code 1, one `error:` line on stderr containing `expected`, no traceback; returns the line."""
    assert done.returncode == 1, (done.returncode, done.stdout[-2000:], done.stderr[-3000:])
    assert "Traceback" not in done.stdout + done.stderr, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr[-3000:]
    for text in expected:
        assert text in lines[0], (text, lines[0])
    return lines[0]


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A project folder with default params and a registry holding one promoted (fake) version."""
    (tmp_path / "params.yaml").write_text("{}\n")
    monkeypatch.setenv("BENTOML_HOME", str(Paths(tmp_path).bentoml_home))
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    (artifact / "model.safetensors").write_text("weights")
    registry = Registry.of_project(Paths(tmp_path))
    version = registry.register(artifact, {"data_version": "d1"})
    registry.record_decision(version, {"verdict": "promote", "reasons": ["test"]})
    registry.promote(version, actor="tests", reason="test")
    (tmp_path / "version").write_text(version)
    return tmp_path


def version_of(project: Path) -> str:
    return (project / "version").read_text()


DAMAGE = [  # (file under .seqops/registry, content, command, what the line must name)
    ("champion.json", b"\x00\xff not json", ["models"], ["champion.json", "not UTF-8"]),
    ("champion.json", b'{"champion": "{v}", "previous": "{v}"}', ["promote", "{v}"], ["champion.json", "previous"]),
    ("champion.json", b'{"champion": 7}', ["rollback"], ["champion.json", "champion"]),
    ("versions/{v}.json", b'{"created_at": "t", "content_hash": "h"}', ["models"], ["{v}.json", "version"]),
    (
        "versions/{v}.json",
        b'{"version": "{v}", "created_at": "t", "content_hash": "h", "decision": "yes"}',
        ["models", "show", "{v}"],
        ["{v}.json", "decision"],
    ),
    ("versions/{v}.json", b"\xc3\x28", ["gate"], ["{v}.json", "not UTF-8"]),
    ("audit.jsonl", b'{"seq": 1, "action": "promote"}\n', ["history"], ["audit.jsonl line 1", "time"]),
    ("audit.jsonl", b"[1, 2]\n", ["promote", "{v}"], ["audit.jsonl line 1", "not a JSON object"]),
]


@pytest.mark.parametrize(
    "name, content, command, expected", DAMAGE, ids=[f"{n.split('/')[0]}-{c[0]}" for n, _, c, _ in DAMAGE]
)
def test_a_damaged_registry_is_one_line_naming_the_file(project, name, content, command, expected):
    v = version_of(project)
    path = Paths(project).registry / name.replace("{v}", v)
    damaged = content.replace(b"{v}", v.encode())
    path.write_bytes(damaged)
    assert_one_line_error(
        cli(project, *(arg.replace("{v}", v) for arg in command)), *(e.replace("{v}", v) for e in expected)
    )
    assert path.read_bytes() == damaged  # refused, not "repaired" by a write


@pytest.mark.parametrize(
    "command",
    [
        ["models", "show", "../../../x"],
        ["promote", "../.."],
        ["lineage", "../../../x"],
        ["gate", "../../../x"],
        ["promote", "v0001-abcdef/../../../../x"],
    ],
    ids=" ".join,
)
def test_version_arguments_that_are_not_versions_are_refused(project, command):
    # a file the path in the argument would reach: it must never be read
    (project / "x.json").write_text(
        json.dumps({"version": "x", "content_hash": "h", "created_at": "t", "data_version": "LEAKED"})
    )
    done = cli(project, *command)
    assert_one_line_error(done, "not a version name", repr(command[-1]))
    assert "LEAKED" not in done.stdout + done.stderr


def test_gate_with_an_unknown_version_is_one_line(project):
    assert_one_line_error(cli(project, "gate", "v0042-abcdef"), "unknown model version 'v0042-abcdef'")


def test_an_unreachable_registry_never_shows_the_dsn_password(project):
    (project / "params.yaml").write_text(yaml.safe_dump({"registry": {"backend": "postgres"}}))
    done = cli(project, "models", env={"SEQOPS_REGISTRY_DSN": f"postgresql://postgres:{SECRET}@127.0.0.1:1/none"})
    assert_one_line_error(done, "cannot reach the PostgreSQL registry at postgresql://postgres:***@127.0.0.1:1/none")
    assert SECRET not in done.stdout + done.stderr


def test_a_bad_params_yaml_is_one_line(project):
    (project / "params.yaml").write_text(
        yaml.safe_dump({"registry": {"backend": "sqlite"}, "train": {"epochs": "many"}})
    )
    assert_one_line_error(
        cli(project, "history"), "params.yaml: invalid configuration", "registry.backend", "train.epochs"
    )


def test_a_missing_state_file_is_one_line(project):
    assert_one_line_error(cli(project, "features"), "events.parquet", "not found")
