"""The `profile` stage (`seqops profile`, DVC): per-user profiles — the behaviour of
`seqops.features.profiles` plus the sequence embedding of the user under a model (the
`Artifact.embeddings` of their last `features.max_len` events) — segmented (models/segments.py),
with an HTML report per data version (models/segment_report.py).

Whose embedding (`profile.model`): the champion, the model that serves, and the candidate while
there is no champion yet (a first retrain); or always the candidate. In the retrain flow the stage
runs after the promote, so "the champion" is the version this retrain left serving.

Outputs (one rename each): `.seqops/profiles/profiles.parquet` (one row per user, the Feast
`user_profile` view's source, stamped with the data's last event), `segments.json` (the segments
in words, how k was chosen, which model and data), `metrics.json` (DVC metrics), and one line per
run in `.seqops/reports/profiles/history.jsonl` (segment sizes over time: the monitor shows them).
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from seqops.config import Params, Paths
from seqops.config_profile import EmbeddingModel
from seqops.features.profiles import BehaviourProfiles, ProfileFiles, behaviour_profiles
from seqops.io import atomic_path, file_md5, now_iso, write_json_atomic
from seqops.models.release.registry import Registry
from seqops.models.segments import describe, segment
from seqops.models.training.artifact import Artifact
from seqops.models.training.data import type_ids

log = logging.getLogger(__name__)


def embedding_model(paths: Paths, which: EmbeddingModel) -> tuple[str, Artifact]:
    """(version, artifact) of the model whose embedding profiles carry (see the module docstring)."""
    if which == "champion":
        registry = Registry.of_project(paths)
        champion = registry.champion()
        if champion is not None:
            return champion, Artifact.load(registry.model_dir(champion))
    if not paths.candidate.exists():
        raise FileNotFoundError(f"no champion and no candidate at {paths.candidate}: run `seqops train` first")
    artifact = Artifact.load(paths.candidate)
    return f"candidate:{str(artifact.meta.get('data_version', '?'))[:12]}", artifact


def user_histories(events: pd.DataFrame, users: pd.Index, max_len: int) -> tuple[list[np.ndarray], list[list[str]]]:
    """Each user's last `max_len` items and event types, oldest first (what the online row holds)."""
    recent = events.sort_values(["user_id", "ts"], kind="stable").groupby("user_id").tail(max_len)
    owners = recent["user_id"].to_numpy()
    starts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]]) if len(owners) else np.zeros(0, np.int64)
    items = np.split(recent["item_id"].to_numpy(np.int64), starts[1:])
    kinds = np.split(recent["event_type"].astype(str).to_numpy(), starts[1:])
    by_user = dict(zip(owners[starts].tolist(), zip(items, kinds)))
    return [by_user[u][0] for u in users], [list(by_user[u][1]) for u in users]


def user_embeddings(artifact: Artifact, histories: list[np.ndarray], types: list[list[str]]) -> np.ndarray | None:
    """`Artifact.embeddings` of the histories, with their event types when the model reads them."""
    names = getattr(artifact.model.config, "event_types", None)
    ids = [type_ids(t, names) for t in types] if artifact.reads_types and names else None
    return artifact.embeddings(histories, ids)


def profile_table(
    behaviour: BehaviourProfiles, embedding: np.ndarray | None, labels: np.ndarray, segments: list[dict], meta: dict
) -> pa.Table:
    """The rows of profiles.parquet (the Feast view's columns, user_id and event_timestamp first)."""
    names = {s["segment"]: s["label"] for s in segments}
    t = behaviour.table.drop(columns=["rfm_r", "rfm_f", "rfm_m"])
    vectors = [[] for _ in range(len(t))] if embedding is None else list(np.round(embedding, 5).astype(np.float32))
    frame = t.assign(
        event_timestamp=behaviour.reference,
        embedding=vectors,
        segment=labels,
        segment_label=[names[s] for s in labels],
        model_version=meta["model_version"],
        data_version=meta["data_version"],
    ).reset_index()
    first = ["user_id", "event_timestamp"]
    frame = frame[first + [c for c in frame.columns if c not in first]]
    schema = pa.Schema.from_pandas(frame, preserve_index=False).set(
        frame.columns.get_loc("embedding"), pa.field("embedding", pa.list_(pa.float32()))
    )
    return pa.Table.from_pandas(frame, schema=schema, preserve_index=False)


def profile_stage(params: Params, paths: Paths) -> dict:
    """Compute, segment and write the profiles of every user in the events; returns segments.json."""
    from seqops.models.segment_report import write_report

    p, files = params.profile, ProfileFiles.of(paths)
    events = pd.read_parquet(paths.events)
    behaviour = behaviour_profiles(events, params.model.churn_horizon_days, p.top_categories)
    version, artifact = embedding_model(paths, p.model)
    histories, types = user_histories(events, behaviour.table.index, params.features.max_len)
    embedding = user_embeddings(artifact, histories, types)
    seg = segment(behaviour, embedding, p)
    segments = describe(behaviour, seg.labels)
    meta = {
        "created": now_iso(),
        "data_version": file_md5(paths.events),
        "model_version": version,
        "model_kind": artifact.meta.get("kind"),
        "embedding_dim": 0 if embedding is None else int(embedding.shape[1]),
        "reference_time": behaviour.reference.isoformat(),
        "users": len(behaviour.table),
        "monetary": behaviour.has_monetary,
        "churn_days": params.model.churn_horizon_days,
    }
    summary = {
        **meta,
        "method": seg.method,
        "criterion": seg.criterion,
        "k": sum(1 for s in segments if s["segment"] >= 0),
        "scores": seg.scores,
        "silhouette": seg.silhouette,
        "blocks": seg.blocks,
        "segments": segments,
    }
    with atomic_path(files.table) as tmp:
        pq.write_table(profile_table(behaviour, embedding, seg.labels, segments, meta), tmp)
    summary["report"] = str(write_report(files.report_dir(meta["data_version"]), behaviour, seg, summary, p))
    write_json_atomic(files.segments, summary)
    write_json_atomic(files.metrics, _metrics(summary, behaviour))
    _append_history(files, summary)
    log.info("profiles: %d users in %d segments (%s) → %s", meta["users"], summary["k"], seg.method, files.table)
    return summary


def _metrics(summary: dict, behaviour: BehaviourProfiles) -> dict:
    return {
        "users": summary["users"],
        "segments": summary["k"],
        "silhouette": summary["silhouette"],
        "churn_rate": round(float(behaviour.table["churned"].mean()), 4),
        "largest_segment_share": max((s["share"] for s in summary["segments"]), default=0.0),
    }


def _append_history(files: ProfileFiles, summary: dict) -> None:
    """One line per run: when, which data and model, the segment sizes (by number and label)."""
    line = {
        "time": summary["created"],
        "data_version": summary["data_version"],
        "model_version": summary["model_version"],
        "users": summary["users"],
        "sizes": {str(s["segment"]): s["size"] for s in summary["segments"]},
        "labels": {str(s["segment"]): s["label"] for s in summary["segments"]},
    }
    files.history.parent.mkdir(parents=True, exist_ok=True)
    with files.history.open("a") as fh:
        fh.write(json.dumps(line) + "\n")
