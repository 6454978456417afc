"""Data lineage: the ingest manifest, the per-snapshot data report, and a model's trail back to data.

`write_manifest` records what one ingest read (each source file's name, size, md5 and row counts,
the item-metadata files, the counts per reason) and the md5 of the events it wrote; DVC versions it
as a metric of the ingest stage and the train stage copies it into the model's `seqops.json` as
`sources`. `lineage` reads a registered version's metadata back and checks that its data snapshot
is still in the DVC cache and remote; `data_report` writes an Evidently data summary per snapshot.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from seqops.config import IngestParams, Paths
from seqops.io import atomic_path, file_md5

if TYPE_CHECKING:  # ingest publishes through this module: no import back at run time
    from seqops.features.ingest import IngestResult

REPORT_SAMPLE = 100_000  # events summarised by the Evidently report (an even sample)


def manifest_path(paths: Paths) -> Path:
    return paths.events.parent / "manifest.json"


def data_report_dir(paths: Paths, events_md5: str) -> Path:
    return paths.reports / "data" / events_md5[:12]


def _shown(path: str, paths: Paths) -> str:
    """Project-relative when the file is inside the project (so the manifest is the same on any machine)."""
    try:
        return str(Path(path).relative_to(paths.project))
    except ValueError:
        return path


def manifest_of(result: IngestResult, paths: Paths, p: IngestParams, events_md5: str) -> dict:
    """What one ingest read (files, counts, params) and the md5 of the events it wrote."""
    return {
        "format": result.format,
        "events_md5": events_md5,
        "files": [{**f, "path": _shown(f["path"], paths)} for f in result.files],
        "meta_files": [{**f, "path": _shown(f["path"], paths)} for f in result.meta_files],
        "counts": result.counts,
        "ingest_params": p.model_dump(),
    }


def write_manifest(result: IngestResult, paths: Paths, p: IngestParams) -> dict:
    """(Re)write `.seqops/events/manifest.json` for the events under `paths` (`write_outputs`
    already wrote it with them); return it."""
    manifest = manifest_of(result, paths, p, file_md5(paths.events))
    with atomic_path(manifest_path(paths)) as tmp:
        dump_manifest(manifest, tmp)
    return manifest


def dump_manifest(manifest: dict, path: Path) -> None:
    path.write_text(json.dumps(manifest, indent=2) + "\n")


def read_manifest(paths: Paths) -> dict | None:
    path = manifest_path(paths)
    return json.loads(path.read_text()) if path.exists() else None


# --- data report ---------------------------------------------------------------------------------


def _report_frame(events: pd.DataFrame) -> pd.DataFrame:
    """Per-event columns a person checks first: types, values, categories, gaps, session sizes."""
    gap = events.groupby("user_id")["ts"].diff().dt.total_seconds()
    session_size = events.groupby("session_id")["session_id"].transform("size")
    return pd.DataFrame(
        {
            "event_type": events["event_type"].astype(str),
            "category": events["category"].astype(str),
            "value": events["value"],
            "log_gap_s": np.log1p(gap),
            "session_events": session_size,
            "hour": events["ts"].dt.hour,
            "user_id": events["user_id"],
            "item_id": events["item_id"],
        }
    )


def report_files(paths: Paths, events_md5: str) -> tuple[Path, Path]:
    """The data summary of one snapshot: (HTML, JSON)."""
    out = data_report_dir(paths, events_md5)
    return out / "data_summary.html", out / "data_summary.json"


def write_data_report(events_path: Path, html: Path, json_path: Path, sample: int = REPORT_SAMPLE) -> None:
    """Evidently data summary (HTML + JSON) of an even sample of the events in `events_path`."""
    from evidently import Report
    from evidently.presets import DataSummaryPreset

    events = pd.read_parquet(events_path)
    events = events.iloc[:: max(len(events) // sample, 1)] if len(events) > sample else events
    with np.errstate(divide="ignore", invalid="ignore"):
        snapshot = Report([DataSummaryPreset()]).run(current_data=_report_frame(events), reference_data=None)
    snapshot.save_html(str(html))
    snapshot.save_json(str(json_path))


def data_report(paths: Paths, events_md5: str, sample: int = REPORT_SAMPLE) -> Path:
    """The data summary of the snapshot under `paths` (whose events have md5 `events_md5`): the one
    `write_outputs` published with it, else written now (both files appear at once, or neither)."""
    html, json_path = report_files(paths, events_md5)
    if not (html.exists() and json_path.exists()):  # keyed by content: an existing one is this snapshot's
        with ExitStack() as stack:
            write_data_report(paths.events, *(stack.enter_context(atomic_path(f)) for f in (html, json_path)), sample)
    return html


# --- a model's lineage ---------------------------------------------------------------------------


def _remote_dir(paths: Paths) -> Path | None:
    """The default DVC remote's folder when it is a local path (as this project's is)."""
    from dvc.config import Config, ConfigError

    try:
        config = Config(dvc_dir=str(paths.project / ".dvc"))
        url = str(config["remote"][config["core"]["remote"]]["url"])
    except (ConfigError, KeyError):
        return None
    return None if "://" in url else Path(url)


def _stored(root: Path | None, md5: str | None) -> bool | None:
    """Whether a DVC 3 cache/remote folder holds this file hash (None when there is no such folder)."""
    if root is None or not md5:
        return None
    return (root / "files" / "md5" / md5[:2] / md5[2:]).exists()


def lineage(registry, version: str, paths: Paths) -> dict:
    """Everything that produced `version`: data versions (and whether DVC still has them), source
    files with hashes and counts, params, ingest counts, evaluation metrics and the gate verdict."""
    meta = registry.get(version)
    data_version = meta.get("data_version")
    sources = meta.get("sources") or {}
    report = data_report_dir(paths, data_version) / "data_summary.html" if data_version else None
    return {
        "version": version,
        "created_at": meta.get("created_at"),
        "parent_version": meta.get("parent_version"),
        "data_version": data_version,
        "raw_data_version": meta.get("raw_data_version"),
        "features_version": meta.get("features_version"),
        "in_dvc_cache": _stored(paths.project / ".dvc" / "cache", data_version),
        "in_dvc_remote": _stored(_remote_dir(paths), data_version),
        "format": sources.get("format"),
        "files": sources.get("files", []),
        "meta_files": sources.get("meta_files", []),
        "ingest_counts": sources.get("counts", {}),
        "ingest_params": sources.get("ingest_params", {}),
        "params_hash": meta.get("params_hash"),
        "params": meta.get("params", {}),
        "eval_metrics": meta.get("eval_metrics", {}),
        "verdict": (meta.get("decision") or {}).get("verdict"),
        "refit_of": meta.get("refit_of"),  # served version: the refit of this gated candidate
        "refit_mode": meta.get("refit_mode"),
        "served_as": meta.get("served_as"),  # gated candidate: the refit that serves it
        "data_report": str(report) if report and report.exists() else None,
    }


def refit_lines(info: dict) -> list[str]:
    """How a served refit and its gated candidate point at each other (train.refit)."""
    if info.get("refit_of"):
        return [
            f"refit of     {info['refit_of']}  ({info.get('refit_mode')}: trained on every event up to the cut; "
            f"gate decision and metrics are {info['refit_of']}'s)"
        ]
    if info.get("served_as"):
        return [f"served as    {info['served_as']}  (its refit on every event up to the cut)"]
    return []


def render_lineage(info: dict) -> str:
    """Plain-text view of `lineage` (what `seqops lineage` prints)."""

    def yes(flag: bool | None) -> str:
        return {True: "yes", False: "NO", None: "-"}[flag]

    lines = [
        f"model {info['version']} (created {info['created_at']}, parent {info['parent_version'] or '-'}, "
        f"gate {info['verdict'] or '-'})",
        *refit_lines(info),
        f"data version  {info['data_version']}  (events.parquet md5; DVC cache: {yes(info['in_dvc_cache'])}, "
        f"remote: {yes(info['in_dvc_remote'])})",
        f"raw snapshot  {info['raw_data_version'] or '-'}  (.seqops/data/raw.dvc md5)",
        f"features      {info['features_version'] or '-'}",
        f"format        {info['format'] or '- (no ingest manifest recorded)'}",
    ]
    files = [*info["files"], *({**f, "meta": True} for f in info["meta_files"])]
    if files:
        lines.append("source files:")
        for f in files:
            rows = (
                "item metadata"
                if f.get("meta")
                else (f"{f['rows_read']:,} read, {f['rows_kept']:,} kept, {f['rows_quarantined']:,} quarantined")
            )
            lines.append(f"  {f['name']:<28} md5 {f['md5']}  {f['size']:>14,} B  {rows}")
    counts = {k: v for k, v in info["ingest_counts"].items() if v}
    if counts:
        lines.append("ingest counts: " + ", ".join(f"{k}={v:,}" for k, v in counts.items()))
    lines.append(f"params ({info['params_hash']}): " + json.dumps(info["params"], sort_keys=True))
    if info["ingest_params"]:
        lines.append("ingest params: " + json.dumps(info["ingest_params"], sort_keys=True))
    evaluation = info["eval_metrics"]
    for model, scores in (
        (evaluation.get("kind", "model"), evaluation.get("model") or evaluation.get("sasrec")),
        ("popularity", evaluation.get("popularity")),
    ):
        if scores:
            lines.append(
                f"eval {model:<10} " + ", ".join(f"{k}={v:.4f}" for k, v in scores.items() if isinstance(v, float))
            )
    lines.append(f"data report   {info['data_report'] or '-'}")
    return "\n".join(lines)
