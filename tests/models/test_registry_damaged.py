"""Nothing lost, nothing corrupted: a damaged registry record is refused with one sentence naming the
record and the field (both backends) and is left as it was; version names are checked before they
can become paths; registry files get explicit modes whatever the umask; a PostgreSQL DSN's password
never appears in a message."""

import json
import os
import stat
from pathlib import Path

import pytest

from seqops.config import Paths, RegistryParams
from seqops.models.release.registry import (
    DamagedRegistryError,
    MissingModelError,
    Registry,
    RegistryError,
    content_hash,
)
from tests.models.registry_helpers import approve, fake_artifact

V1 = "v0001-abcdef"


def registered(registry: Registry, tmp_path: Path, content: str = "a") -> str:
    version = registry.register(fake_artifact(tmp_path, content), {})
    approve(registry, version)
    return version


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


# -- damaged records, through the store's own writes (both backends) -----------------------------

DAMAGED_POINTERS = [
    ({"champion": V1, "previous": V1}, "previous"),  # a string would be split into characters
    ({"champion": "../../../../etc/passwd"}, "champion"),
    ({"champion": V1, "event": {"seq": "3"}}, "event.seq"),
    ([V1], "the record"),
]


@pytest.mark.parametrize("pointer, field", DAMAGED_POINTERS, ids=[f for _, f in DAMAGED_POINTERS])
def test_a_damaged_pointer_is_refused_and_left_alone(registry, tmp_path, pointer, field):
    v1, v2 = registered(registry, tmp_path, "a"), registered(registry, tmp_path, "b")
    registry.promote(v1)
    registry.store.set_pointer(pointer)
    for read_or_write in (registry.champion, lambda: registry.promote(v2), registry.rollback):
        with pytest.raises(DamagedRegistryError) as caught:
            read_or_write()
        assert f": {field}:" in one_line(caught)
        assert "champion.json" in str(caught.value) or "seqops_registry_pointer" in str(caught.value)
    with pytest.raises(DamagedRegistryError):
        registry.store.pointer()  # still the damaged record: nothing rewrote it


def test_damaged_version_metadata_and_audit_entries_are_named(registry, tmp_path):
    v1 = registered(registry, tmp_path)
    registry.store.put({**registry.get(v1), "decision": "promote"})  # was: AttributeError in `seqops models`
    for read_or_write in (lambda: registry.get(v1), registry.versions, lambda: registry.promote(v1)):
        with pytest.raises(DamagedRegistryError) as caught:
            read_or_write()
        assert v1 in one_line(caught) and ": decision: Input should be a valid dictionary" in str(caught.value)

    registry.store.append_audit({"seq": 2, "time": 5, "actor": "x", "action": "promote", "version": v1, "reason": ""})
    with pytest.raises(DamagedRegistryError) as caught:
        registry.history()
    assert ": time: Input should be a valid string" in one_line(caught)
    assert "audit.jsonl line 2" in str(caught.value) or "seqops_registry_audit" in str(caught.value)


# -- damaged bytes in the local files ----------------------------------------------------------------

DAMAGED_FILES = [
    ("champion.json", b"\xff\xfe\x00garbage", "not UTF-8 text"),
    ("champion.json", b'{"champion": "v0001-', "not JSON"),
    ("versions/{v1}.json", b'{"content_hash": "x", "created_at": "t"}', ": version: Field required"),  # was: KeyError
    ("versions/{v1}.json", b'{"version": "v0002-abcdef", "content_hash": "x", "created_at": "t"}', "file name"),
    ("versions/{v1}.json", b"\xc3\x28", "not UTF-8 text"),  # was: UnicodeDecodeError
]


@pytest.mark.parametrize("name, content, problem", DAMAGED_FILES, ids=[p for _, _, p in DAMAGED_FILES])
def test_damaged_local_files_name_the_file(local, tmp_path, name, content, problem):
    v1 = registered(local, tmp_path)
    local.promote(v1)
    path = local.root / name.format(v1=v1)
    path.write_bytes(content)
    readers = (
        (local.champion, local.history, local.rollback)
        if name == "champion.json"
        else (local.versions, lambda: local.get(v1))
    )
    for read in readers:
        with pytest.raises(DamagedRegistryError) as caught:
            read()
        assert str(path) in one_line(caught) and problem in str(caught.value)
    assert path.read_bytes() == content


DAMAGED_AUDIT_LINES = [
    (b'{"seq": 2, "actor": "x"}', "line 2: time: Field required"),  # was: KeyError in `seqops history`
    (b"[1, 2]", "line 2: not a JSON object"),  # was: AttributeError
    (b"hello", "line 2: not a JSON audit entry"),
    (
        b'{"seq": 2, "time": "t", "actor": "x", "action": "promote", "version": "v0001-abcdef", "reason": "caf\xe9"}',
        "line 2: not UTF-8 text",
    ),  # was: UnicodeDecodeError
]


@pytest.mark.parametrize(
    "line, problem", DAMAGED_AUDIT_LINES, ids=[p.split(": ", 1)[1] for _, p in DAMAGED_AUDIT_LINES]
)
def test_a_damaged_audit_line_is_named_but_a_torn_one_is_skipped(local, tmp_path, line, problem):
    v1 = registered(local, tmp_path)
    audit = local.root / "audit.jsonl"
    with open(audit, "ab") as fh:
        fh.write(line + b"\n" + b'{"seq": 3, "action": "prom')  # and a torn last line, as a killed writer leaves
    for read_or_write in (local.history, lambda: local.promote(v1)):
        with pytest.raises(DamagedRegistryError) as caught:
            read_or_write()
        assert f"{audit} {problem}" in one_line(caught)
    assert local.champion() is None


# -- version arguments ---------------------------------------------------------------------------------

BAD_VERSIONS = ["../../../x", "../..", f"{V1}/../../../../x", "", "v1", "v0001-ABCDEF", "V0001-abcdef"]


@pytest.mark.parametrize("bad", BAD_VERSIONS)
def test_version_arguments_must_be_version_names(registry, tmp_path, bad):
    (tmp_path / "x.json").write_text(
        json.dumps(
            {"version": "../../../x", "content_hash": "h", "created_at": "t", "data_version": "outside the registry"}
        )
    )
    registered(registry, tmp_path)
    calls = [
        lambda: registry.get(bad),
        lambda: registry.model_dir(bad),
        lambda: registry.promote(bad, force=True, reason="r"),
        lambda: registry.record_decision(bad, {"verdict": "promote"}),
    ]
    for call in calls:
        with pytest.raises(RegistryError, match="not a version name") as caught:
            call()
        assert "\n" not in str(caught.value)
    assert registry.champion() is None


def test_an_unknown_but_well_formed_version_is_unknown(registry):
    with pytest.raises(RegistryError, match=f"unknown model version '{V1}'"):
        registry.get(V1)
    with pytest.raises(RegistryError, match=f"model files of {V1} are missing"):
        registry.model_dir(V1)


# -- file modes ----------------------------------------------------------------------------------------


def test_registry_files_get_explicit_modes_whatever_the_umask(tmp_path, monkeypatch):
    monkeypatch.setenv("BENTOML_HOME", str(Paths(tmp_path).bentoml_home))
    previous = os.umask(0)  # the process umask would give 0666 files and 0777 folders
    try:
        registry = Registry.of_project(Paths(tmp_path))
        v1 = registered(registry, tmp_path)
        registry.promote(v1)
    finally:
        os.umask(previous)
    root = registry.root
    modes = {
        path.relative_to(root).as_posix(): stat.S_IMODE(path.stat().st_mode)
        for path in [root, root / "versions", *root.rglob("*")]
    }
    assert modes == {
        ".": 0o755,
        "versions": 0o755,
        f"versions/{v1}.json": 0o644,
        "champion.json": 0o644,
        "audit.jsonl": 0o644,
        ".lock": 0o644,
    }


# -- PostgreSQL credentials ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://postgres:s3cret-pw@127.0.0.1:1/none",
        "host=127.0.0.1 port=1 user=postgres password=s3cret-pw dbname=none",
        "postgresql://postgres@127.0.0.1:1/none?password=s3cret-pw",
    ],
)
def test_a_dsn_password_never_appears_in_the_message(tmp_path, monkeypatch, dsn):
    monkeypatch.setenv("BENTOML_HOME", str(Paths(tmp_path).bentoml_home))
    with pytest.raises(RegistryError, match="cannot reach the PostgreSQL registry") as caught:
        Registry(Paths(tmp_path), RegistryParams(backend="postgres", postgres_dsn=dsn))
    message = one_line(caught)
    assert "s3cret-pw" not in message and "***" in message and "127.0.0.1" in message


def test_metadata_the_registry_would_refuse_to_read_is_never_written(registry, tmp_path):
    artifact = fake_artifact(tmp_path, "a")
    with pytest.raises(RegistryError, match="refusing to store the metadata of v0001-.*: parent_version"):
        registry.register(artifact, {"parent_version": "../../x"})
    with pytest.raises(MissingModelError):  # refused before anything went into the BentoML store either
        registry.model_dir(f"v0001-{content_hash(artifact)[:6]}")
    v1 = registered(registry, tmp_path, "b")
    with pytest.raises(RegistryError, match=f"refusing to store the metadata of {v1}: decision"):
        registry.record_decision(v1, ["promote"])
    assert [v["version"] for v in registry.versions()] == [v1] and registry.get(v1)["decision"]["verdict"] == "promote"
