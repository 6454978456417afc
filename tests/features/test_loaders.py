"""Every supported log format, on a small fixture file written in that format (tests/fixtures/)."""

from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from seqops.config import CsvMapping, IngestParams, Paths
from seqops.features.ingest import EVENT_COLUMNS, REASONS, IngestError, ingest
from seqops.features.loaders import plan

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)
CLICKS = CsvMapping(
    separator=";",
    user="who",
    item="what",
    time="when",
    time_unit="iso",
    event="action",
    value="stars",
    category="shelf",
    event_map={"click": "view", "buy": "purchase", "wishlist": "fav"},
)

# format, fixture, {reason: count}, kept
CASES = {
    "movielens-100k": (
        "movielens",
        "movielens/ml-100k",
        {"malformed_row": 1, "bad_value": 1, "duplicate": 1, "below_rating_threshold": 2, "too_few_user_events": 2},
        7,
    ),
    "movielens-1m": (
        "movielens",
        "movielens/ml-1m",
        {"malformed_row": 1, "negative_timestamp": 1, "below_rating_threshold": 2, "too_few_user_events": 1},
        7,
    ),
    "movielens-latest": (
        "movielens",
        "movielens/ml-latest",
        {"missing_user_id": 1, "missing_item_id": 1, "bad_timestamp": 1, "below_rating_threshold": 1},
        7,
    ),
    "retailrocket": (
        "retailrocket",
        "retailrocket",
        {"malformed_row": 1, "unknown_event_type": 1, "duplicate": 1, "too_few_user_events": 1},
        7,
    ),
    "taobao": (
        "taobao",
        "taobao",
        {"malformed_row": 2, "missing_item_id": 1, "unknown_event_type": 1, "duplicate": 1},
        8,
    ),
    "sasrec": ("sasrec", "sasrec", {"malformed_row": 1, "too_few_user_events": 1}, 10),
    "csv": ("csv", "csv", {"bad_timestamp": 1}, 7),
}


def run(fmt: str, fixture: str, tmp_path: Path, **overrides) -> object:
    p = IngestParams(format=fmt, csv=CLICKS, **overrides)
    return ingest(FIXTURES / fixture, p, Paths(tmp_path), now=NOW)


@pytest.mark.parametrize("case", CASES)
def test_each_format_counts_every_row(case, tmp_path):
    fmt, fixture, rejected, kept = CASES[case]
    result = run(fmt, fixture, tmp_path)
    counts = result.counts
    assert {r: n for r, n in counts.items() if r in REASONS and n} == rejected
    assert counts["kept"] == kept == len(result.events)
    assert counts["read"] == counts["kept"] + sum(counts[r] for r in REASONS) == kept + len(result.quarantine)
    assert list(result.events.columns) == EVENT_COLUMNS
    assert set(result.quarantine["source_file"]) <= {f["name"] for f in result.files}
    assert result.quarantine["line"].is_monotonic_increasing and (result.quarantine["line"] >= 1).all()
    # one manifest entry per source file, counts per file add up too
    assert sum(f["rows_read"] for f in result.files) == counts["read"]
    assert sum(f["rows_kept"] for f in result.files) == kept


def test_movielens_ratings_become_implicit_feedback_with_first_genre(tmp_path):
    result = run("movielens", "movielens/ml-100k", tmp_path)
    events, items, q = result.events, result.items.set_index("raw_id"), result.quarantine
    assert set(events["event_type"]) == {"rating"} and events["value"].min() >= 4.0
    assert items.loc["1", "category"] == "Animation" and items.loc["4", "title"] == "Misérables, Les (1995)"  # latin-1
    assert items.loc["5", "category"] == "unknown"  # no genre flag set
    low = q[q["reason"] == "below_rating_threshold"]
    assert low["line"].tolist() == [8, 9] and low["value"].tolist() == ["1", "2"]
    assert q.set_index("reason").loc["malformed_row", "detail"] == "244\t1\t4"


def test_rating_threshold_can_keep_low_ratings(tmp_path):
    kept = run("movielens", "movielens/ml-100k", tmp_path, below_threshold="keep").events
    assert kept["value"].min() == 1.0 and len(kept) == 11


@pytest.mark.parametrize(
    "fixture, item, category, title",
    [
        ("movielens/ml-1m", "5", "Action", "Star Wars: Episode IV - A New Hope (1977)"),
        ("movielens/ml-latest", "11", "Comedy", "American President, The (1995)"),
        ("movielens/ml-latest", "13", "unknown", "Some Film Nobody Tagged (2020)"),
    ],
)
def test_movielens_item_files(fixture, item, category, title, tmp_path):
    items = run("movielens", fixture, tmp_path).items.set_index("raw_id")
    assert (items.loc[item, "category"], items.loc[item, "title"]) == (category, title)


def test_retailrocket_maps_events_and_takes_the_latest_category(tmp_path):
    result = run("retailrocket", "retailrocket", tmp_path)
    assert result.events["event_type"].value_counts().to_dict() == {"view": 5, "cart": 1, "purchase": 1}
    categories = dict(zip(result.items["raw_id"], result.items["category"]))
    assert categories == {"355908": "1173", "248676": "1051", "111016": "1338"}  # 111016 moved 209 → 1338
    assert result.events["ts"].iloc[0] == pd.Timestamp(1433221332117, unit="ms", tz="UTC")  # ms kept
    assert [f["name"] for f in result.meta_files] == ["item_properties_part1.csv", "item_properties_part2.csv"]


def test_taobao_behaviours_and_row_categories(tmp_path):
    events = run("taobao", "taobao", tmp_path).events
    assert events["event_type"].tolist()[:5] == ["view", "view", "cart", "purchase", "fav"]
    assert events["category"].tolist()[:3] == ["2520377", "2520771", "149192"]


def test_sasrec_times_are_synthesized_in_file_order(tmp_path):
    events = run("sasrec", "sasrec", tmp_path, sasrec_start="2020-01-01").events
    start = pd.Timestamp("2020-01-01", tz="UTC")
    # row k of the file (0-based, malformed rows not counted) is start + k seconds
    assert ((events["ts"] - start).dt.total_seconds().astype(int)).tolist() == list(range(10))
    assert set(events["event_type"]) == {"view"} and events.groupby("user_id")["ts"].is_monotonic_increasing.all()


def test_csv_mapping_iso_times_and_event_map(tmp_path):
    result = run("csv", "csv", tmp_path)
    events = result.events
    assert events["event_type"].tolist()[:3] == ["view", "view", "purchase"]
    assert events["value"].tolist()[2] == 5.0 and events["value"].isna().sum() == 5  # blank = no rating
    assert events["ts"].iloc[3] == pd.Timestamp("2024-03-02T08:00:00Z")  # +01:00 → UTC
    assert result.quarantine.set_index("reason").loc["bad_timestamp", "timestamp"] == "not a date"


def test_csv_without_header_and_unix_ms(tmp_path):
    raw = tmp_path / "logs.tsv"
    raw.write_text("".join(f"u{k % 2}\tx{k}\t{1700000000000 + 1000 * k}\n" for k in range(6)))
    mapping = CsvMapping(
        pattern="*.tsv",
        separator="\t",
        header=False,
        names=["u", "i", "t"],
        user="u",
        item="i",
        time="t",
        time_unit="ms",
    )
    events = ingest(tmp_path, IngestParams(format="csv", csv=mapping), Paths(tmp_path), now=NOW).events
    assert len(events) == 6 and events["ts"].min() == pd.Timestamp(1700000000, unit="s", tz="UTC")


def test_csv_mapping_reads_parquet(tmp_path):
    frame = pd.DataFrame(
        {"who": ["a", "a", "a", "b"], "what": [1, 2, 3, 1], "when": pd.to_datetime([1, 2, 3, 4], unit="h", utc=True)}
    )
    pq.write_table(pa.Table.from_pandas(frame), tmp_path / "part-0.parquet")
    mapping = CsvMapping(pattern="*.parquet", user="who", item="what", time="when")
    result = ingest(tmp_path, IngestParams(format="csv", csv=mapping, min_user_events=1), Paths(tmp_path), now=NOW)
    assert result.counts["kept"] == 4 and result.events["ts"].iloc[0] == pd.Timestamp(3600, unit="s", tz="UTC")
    assert result.items["raw_id"].tolist() == ["1", "2", "3"]


@pytest.mark.parametrize(
    "fmt, fixture, mapping, message",
    [
        ("taobao", "sasrec/beauty-sample.txt", None, r"beauty-sample.txt line 1: expected 5 fields"),
        ("retailrocket", "taobao/UserBehavior.csv", None, r"UserBehavior.csv: missing required column 'visitorid'"),
        (
            "csv",
            "csv",
            CsvMapping(separator=";", user="who", item="what", time="time"),
            r"missing required column 'time'",
        ),
        (
            "csv",
            "csv",
            CLICKS.model_copy(update={"time_unit": "s"}),
            r"clicks.csv line 2: column 'when': '2024-03-01T10:00:00Z' is bad timestamp \(expected a time in unit 's'\)",
        ),
        ("csv", "csv", CLICKS.model_copy(update={"event_map": {}}), r"column 'action': 'click' is unknown event type"),
        ("movielens", "taobao", None, r"no movielens event file"),
        ("sasrec", "taobao", None, r"no \*.txt files"),
    ],
)
def test_a_wrong_format_or_mapping_fails_at_once_naming_line_or_column(fmt, fixture, mapping, message, tmp_path):
    p = IngestParams(format=fmt, csv=mapping or CsvMapping())
    with pytest.raises(IngestError, match=message):
        ingest(FIXTURES / fixture, p, Paths(tmp_path), now=NOW)


def test_plan_lists_metadata_files():
    the_plan = plan("movielens", FIXTURES / "movielens/ml-100k/u.data", IngestParams())
    assert [s.path.name for s in the_plan.sources] == ["u.data"] and [f.name for f in the_plan.meta_files] == ["u.item"]


@pytest.fixture
def cli_project(tmp_path):
    """A folder with params.yaml (csv mapping of the fixture, no Evidently report: fast)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["ingest"] |= {"data_report": False, "csv": CLICKS.model_dump()}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path


@pytest.mark.parametrize("case", ["movielens-1m", "retailrocket", "taobao", "sasrec", "csv"])
def test_cli_ingest_format_and_path(case, cli_project):
    from seqops.cli import app

    fmt, fixture, _, kept = CASES[case]
    done = CliRunner().invoke(
        app, ["ingest", "--format", fmt, "--path", str(FIXTURES / fixture), "--project", str(cli_project)]
    )
    assert done.exit_code == 0, done.output
    assert "kept" in done.output and "quarantine" in done.output
    paths = Paths(cli_project)
    assert len(pd.read_parquet(paths.events)) == kept
    manifest = (paths.events.parent / "manifest.json").read_text()
    assert fmt in manifest and all(
        s.path.name in manifest for s in plan(fmt, FIXTURES / fixture, IngestParams(csv=CLICKS)).sources
    )


def test_cli_ingest_names_the_problem_without_a_traceback(cli_project):
    from seqops.cli import app

    done = CliRunner().invoke(
        app, ["ingest", "--format", "taobao", "--path", str(FIXTURES / "sasrec"), "--project", str(cli_project)]
    )
    assert done.exit_code == 1
    assert "no *.csv files" in done.output and "Traceback" not in done.output
    done = CliRunner().invoke(app, ["ingest", "--format", "parquet", "--project", str(cli_project)])
    assert done.exit_code == 1 and "one of synthetic" in done.output
