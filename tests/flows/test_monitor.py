"""The monitor's view of serving: the request log, the online hit rate and the flagged share."""

import json

import numpy as np
import pandas as pd
import torch

from seqops.config import FlowParams, ModelParams, Params
from seqops.features.sequences import user_feature_table, user_summary
from seqops.flows.monitor import flagged_share, quality_dropped, serving_quality
from seqops.models.nets.baselines import PopularityModel
from seqops.models.nets.sasrec import SASRecModel
from seqops.models.training.artifact import Artifact, save_artifact
from seqops.serving.logs import read_requests


def write_log(directory, day, records):
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / f"requests-{day}.jsonl", "a") as fh:
        for r in records:
            fh.write(json.dumps(r) + "\n")
        fh.write('{"cut by a cra')  # a torn last line is skipped


def request_line(time: str, user: str, items: list | None, fallback: bool = False, **fields) -> dict:
    """One request-log line as serving/logs.py writes it (no `client`: an older line)."""
    line = {"time": f"{time}+00:00", "endpoint": "recommend", "status": 200, "user_id": user}
    return line | {"items": items, "fallback": fallback} | fields


def test_requests_since_the_promote_and_only_answered_recommends(tmp_path):
    log = tmp_path / "requests"
    write_log(log, "2026-01-01", [request_line("2026-01-01T10:00:00", "u1", ["a"])])
    write_log(
        log,
        "2026-01-02",
        [
            request_line("2026-01-02T10:00:00", "u1", ["b", "c"]),
            request_line("2026-01-02T10:00:01", "u2", None, status=400),
            request_line("2026-01-02T10:00:02", "u1", None, endpoint="churn"),
            request_line("2026-01-02T10:00:03", "u3", ["z"], fallback=True),
        ],
    )
    frame = read_requests(log, pd.Timestamp("2026-01-02T00:00:00", tz="UTC"))
    assert frame["user_id"].tolist() == ["u1", "u3"]
    assert len(read_requests(log)) == 3


def test_hit_rate_uses_each_users_latest_earlier_answer():
    requests = pd.DataFrame(
        {
            "time": pd.to_datetime(["2026-01-02T10:00:00", "2026-01-02T12:00:00", "2026-01-02T10:00:00"], utc=True),
            "user_id": ["u1", "u1", "u2"],
            "items": [["a"], ["b", "c"], ["x"]],
            "fallback": [False, False, True],
            "client": "addr:10.0.0.1",
        }
    )
    t = lambda s: str(int(pd.Timestamp(s, tz="UTC").timestamp()))  # noqa: E731
    events = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u1", "u2", "u9"],
            "item_id": ["a", "c", "a", "x", "a"],
            "timestamp": [
                t("2026-01-02T11:00"),
                t("2026-01-02T13:00"),
                t("2026-01-02T13:30"),
                t("2026-01-02T11:00"),
                t("2026-01-02T11:00"),
            ],
        }
    )
    quality = serving_quality(requests, events, per_client=False)
    # u1@11:00 'a' in ['a'] (hit); u1@13:00 'c' in ['b','c'] (hit); u1@13:30 'a' not in ['b','c'];
    # u2 was answered by the fallback and u9 never: not counted
    assert quality == {
        "answers": 3,
        "clients": 1,
        "counted_answers": 3,
        "fallback_share": 1 / 3,
        "hit_rate": 2 / 3,
        "events_after_an_answer": 3,
    }


def answers(client: str, n: int, fallback: bool, start: str = "2026-01-02T10:00:00") -> list[dict]:
    times = [(pd.Timestamp(start) + pd.Timedelta(seconds=i)).isoformat() for i in range(n)]
    return [request_line(t, f"{client}-{i}", ["a"], fallback, client=client) for i, t in enumerate(times)]


def test_one_clients_burst_of_unknown_users_does_not_trigger_a_retrain(tmp_path):
    log = tmp_path / "requests"
    normal = [
        *answers("addr:10.0.0.1", 120, False),
        *answers("addr:10.0.0.2", 100, False),
        *answers("addr:10.0.0.2", 10, True),
    ]
    write_log(log, "2026-01-02", normal + answers("addr:10.6.6.6", 150, True))  # the burst: 150 unknown users
    frame = read_requests(log)
    quality = serving_quality(frame, pd.DataFrame(columns=["user_id", "item_id", "timestamp"]))
    assert quality["answers"] == 380 and quality["clients"] == 3 and quality["counted_answers"] == 230
    assert quality["fallback_share"] == 10 / 230 and not quality_dropped(quality, FlowParams())
    alone = serving_quality(
        read_requests(log).query("client == 'addr:10.6.6.6'"), pd.DataFrame(columns=["user_id", "item_id", "timestamp"])
    )
    assert not quality_dropped(alone, FlowParams())  # nobody else's answers: nothing to judge
    # a drop that every client sees still triggers
    write_log(log, "2026-01-03", answers("addr:10.0.0.1", 100, True, "2026-01-03T10:00:00"))
    assert quality_dropped(
        serving_quality(read_requests(log), pd.DataFrame(columns=["user_id", "item_id", "timestamp"])), FlowParams()
    )


def test_request_log_lines_without_a_client_count_as_one_unknown_client(tmp_path):
    log = tmp_path / "requests"
    write_log(log, "2026-01-02", [request_line("2026-01-02T10:00:00", "u1", ["a"], fallback=True)])
    assert read_requests(log)["client"].tolist() == ["unknown"]


def canonical(
    users: dict[int, list[int]], start: pd.Timestamp, per_session: dict[int, int], gap_s: float
) -> pd.DataFrame:
    """Canonical events (user_id, item_id, ts, event_type, session_id): `per_session[u]` events a
    session, `gap_s` apart, sessions two hours apart."""
    rows = [
        {
            "user_id": u,
            "item_id": i,
            "ts": start + pd.Timedelta(seconds=gap_s * k + 7200 * (k // per_session[u])),
            "event_type": "view",
            "session_id": int(start.timestamp()) + 1000 * u + k // per_session[u],
        }
        for u, items in users.items()
        for k, i in enumerate(items)
    ]
    return pd.DataFrame(rows).astype({"ts": "datetime64[us, UTC]"})


def test_monitor_reports_the_flagged_share_of_a_batch_and_alerts(tmp_path):
    """Fresh events of usual users: few flagged, no alert; the same users then run a click bot
    (random items, a second apart): most flagged, alert."""
    n_items, rng = 200, np.random.default_rng(0)

    home = {u: int(rng.integers(10)) for u in range(1, 201)}  # item i is in category i % 10
    per_session = {u: int(rng.integers(3, 8)) for u in home}

    def usual(u: int, n: int) -> list[int]:  # popular items of the user's home category
        return (10 * np.minimum(rng.geometric(0.2, n), 19) + home[u]).tolist()

    train = {u: usual(u, int(rng.integers(8, 20))) for u in home}
    known = canonical(train, pd.Timestamp("2026-01-01", tz="UTC"), per_session, 60.0)
    items = pd.DataFrame({"raw_id": [str(i) for i in range(1, n_items + 1)], "item_id": range(1, n_items + 1)})
    items.assign(category=[f"c{i % 10}" for i in range(1, n_items + 1)]).to_parquet(tmp_path / "items.parquet")
    reference = user_summary(user_feature_table(known, 30).to_pandas())
    torch.manual_seed(0)
    model = SASRecModel.from_params(n_items, 30, ModelParams(hidden_size=16, num_layers=1, num_heads=2))
    counts = np.bincount(known["item_id"], minlength=n_items + 1)
    save_artifact(tmp_path / "m", model, PopularityModel.from_counts(counts), {}, tmp_path / "items.parquet", reference)
    artifact, params = Artifact.load(tmp_path / "m"), Params()
    later = known["ts"].max() + pd.Timedelta(days=1)
    calm = flagged_share(
        params, artifact, canonical({u: usual(u, 10) for u in range(1, 101)}, later, per_session, 60.0), known
    )
    assert calm["users"] == 100 and calm["flagged_share"] <= params.anomaly.alert_share and not calm["alert"]
    bots = canonical(
        {u: rng.integers(1, n_items + 1, 10).tolist() for u in range(1, 101)}, later, {u: 10 for u in home}, 1.0
    )
    alarmed = flagged_share(params, artifact, bots, known)
    assert alarmed["flagged_share"] > 0.5 and alarmed["alert"] and alarmed["top_reasons"]
    assert flagged_share(params, artifact, bots[bots["user_id"] <= 5], known) is None  # too few fresh users to judge
