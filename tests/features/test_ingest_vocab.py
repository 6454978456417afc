"""Vocabularies only grow: an ingest of any file (a one-off `--path`, late data, a DVC rerun) keeps
every id an earlier ingest gave out, and gives new raw ids new ids after the largest."""

import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest

from seqops.config import IngestParams, Paths, SyntheticParams
from seqops.features.ingest import IngestError, ingest, write_outputs
from seqops.features.synthetic import write_batch
from tests.conftest import make_project

NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)
NO_REPORT = IngestParams(data_report=False)  # write_outputs skips the Evidently summary: fast
HEADER = "user_id,item_id,category,event_type,timestamp"
SYNTHETIC = SyntheticParams(n_users=200, n_items=150, seed=3)


def vocab(paths: Paths, name: str) -> pd.DataFrame:
    return pd.read_parquet(paths.vocab / f"{name}.parquet")


def ids(table: pd.DataFrame) -> dict[str, int]:
    return dict(zip(table["raw_id"], table[table.columns[1]]))


def late_file(path: Path, known_user: str, known_item: str, first_ts: int) -> Path:
    """A small file, earlier than everything before it: a known user on a known and a new item, and a
    new user on a new item (first appearance order alone would put both new ids first)."""
    rows = [
        f"{known_user},{known_item},c1,view,{first_ts}",
        f"{known_user},i-new,c1,view,{first_ts + 60}",
        f"{known_user},{known_item},c1,cart,{first_ts + 120}",
        *(f"u-new,i-new,c1,view,{first_ts + 10 * k}" for k in range(3)),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    return path


@pytest.fixture
def ingested(tmp_path):
    raw, paths = tmp_path / "raw", Paths(tmp_path)
    write_batch(SYNTHETIC, raw, 0)
    write_outputs(ingest(raw, NO_REPORT, paths, now=NOW), paths)
    return paths


def test_a_one_off_file_keeps_every_known_id_and_adds_new_ones_after(ingested, tmp_path):
    paths = ingested
    users, items = vocab(paths, "users"), vocab(paths, "items")
    known_user, known_item = users["raw_id"].iloc[41], items["raw_id"].iloc[9]  # ids 42 and 10
    small = late_file(tmp_path / "one-off" / "small.csv", known_user, known_item, first_ts=1_700_000_000)

    result = ingest(small, NO_REPORT, paths, now=NOW)
    write_outputs(result, paths)

    after_users, after_items = vocab(paths, "users"), vocab(paths, "items")
    assert ids(after_users) == {**ids(users), "u-new": len(users) + 1}
    assert ids(after_items) == {**ids(items), "i-new": len(items) + 1}
    untouched = items["raw_id"] != known_item  # items the small file does not name keep their whole row
    pd.testing.assert_frame_equal(after_items[: len(items)][untouched], items[untouched])
    served = result.events.groupby("user_id")["item_id"].apply(set).to_dict()
    assert served[42] == {10, len(items) + 1}  # the known user's events under its own id, not another's
    assert served[len(users) + 1] == {len(items) + 1}


def test_cli_ingest_of_a_small_file_leaves_the_project_ids_in_place(tmp_path):
    project = make_project(tmp_path / "project", {"ingest": {"data_report": False}})
    paths = Paths(project)
    write_batch(SYNTHETIC, paths.raw, 0)
    seqops = str(Path(sys.executable).parent / "seqops")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    first = subprocess.run([seqops, "ingest", "--project", str(project)], capture_output=True, text=True, env=env)
    assert first.returncode == 0, first.stderr
    users = vocab(paths, "users")
    small = late_file(tmp_path / "small.csv", users["raw_id"].iloc[41], "i000001", first_ts=1_700_000_000)

    done = subprocess.run(
        [seqops, "ingest", "--path", str(small), "--project", str(project)], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    after = vocab(paths, "users")
    assert len(after) == len(users) + 1
    assert ids(after) == {**ids(users), "u-new": len(users) + 1}
    assert "ids changed" not in done.stdout + done.stderr


def test_a_vocabulary_that_cannot_be_grown_is_refused_and_left_alone(ingested, tmp_path):
    paths = ingested
    broken = vocab(paths, "users")
    broken.loc[1, "raw_id"] = broken.loc[0, "raw_id"]  # one raw id under two ids: no mapping keeps both
    broken.to_parquet(paths.vocab / "users.parquet", index=False)
    before = (paths.vocab / "users.parquet").read_bytes()
    small = late_file(tmp_path / "one-off" / "small.csv", broken["raw_id"].iloc[5], "i000001", 1_700_000_000)
    with pytest.raises(IngestError, match="users.parquet"):
        ingest(small, NO_REPORT, paths, now=NOW)
    assert (paths.vocab / "users.parquet").read_bytes() == before


def test_dvc_repro_with_late_data_keeps_every_known_id(tmp_path):
    """`dvc repro` removes a stage's outputs before it runs it, unless they persist: the vocabulary
    must, or the rerun numbers ids from scratch and late data (earlier times) moves them."""
    project = make_project(tmp_path / "project", {"ingest": {"data_report": False}})
    paths = Paths(project)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}

    def repro() -> None:
        for args in (["dvc", "add", ".seqops/data/raw"], ["dvc", "repro", "ingest"]):
            done = subprocess.run(args, cwd=project, env=env, capture_output=True, text=True)
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    write_batch(SYNTHETIC, paths.raw, 0)
    repro()
    users = vocab(paths, "users")
    late_file(paths.raw / "late.csv", users["raw_id"].iloc[41], "i000001", first_ts=1_700_000_000)
    repro()
    assert ids(vocab(paths, "users")) == {**ids(users), "u-new": len(users) + 1}
