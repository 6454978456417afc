"""The segment report of a profile run: one self-contained HTML file (plots embedded as PNG) per
data version, `.seqops/reports/profiles/<events md5[:12]>/segments.html` — segment sizes, each
segment in words, profile distributions by segment, the 2-D projection of what was clustered and,
for k-means, the silhouette of every k tried. matplotlib's object API (no pyplot: no global state)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from seqops.config_profile import ProfileParams
from seqops.features.profiles import BehaviourProfiles
from seqops.io import write_bytes_atomic
from seqops.models.segments import NOISE, Segmentation

DISTRIBUTIONS = {  # profile column → axis title (monetary only where the data has it)
    "recency_days": "days since the last event",
    "n_sessions": "sessions",
    "events_per_session": "events per session",
    "session_minutes": "minutes per session",
    "weekend_share": "share of weekend events",
    "monetary": "spent on purchases",
}


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)  # no bbox_inches="tight": it draws everything twice
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _name(seg: int) -> str:
    return "noise" if seg == NOISE else str(seg)


def sizes_plot(segments: list[dict]) -> str:
    height = 1.2 + 0.4 * len(segments)
    fig = Figure(figsize=(9, height))
    fig.subplots_adjust(left=0.4, right=0.97, bottom=0.6 / height, top=1 - 0.35 / height)
    ax = fig.subplots()
    ax.barh([f"{_name(s['segment'])}: {s['label'][:50]}" for s in segments], [s["size"] for s in segments])
    ax.invert_yaxis()
    ax.set_xlabel("users")
    ax.set_title("segment sizes")
    return _png(fig)


def distributions_plot(behaviour: BehaviourProfiles, labels: np.ndarray) -> str:
    columns = [c for c in DISTRIBUTIONS if c != "monetary" or behaviour.has_monetary]
    segments = list(np.unique(labels))
    fig = Figure(figsize=(4 * len(columns), 3.4))
    fig.subplots_adjust(wspace=0.3, bottom=0.15)
    for ax, column in zip(np.atleast_1d(fig.subplots(1, len(columns))), columns):
        values = behaviour.table[column].to_numpy(dtype=float)
        ax.boxplot([values[labels == s] for s in segments], showfliers=False)
        ax.set_xticks(range(1, len(segments) + 1), [_name(s) for s in segments])
        ax.set_title(DISTRIBUTIONS[column], fontsize=10)
        ax.set_xlabel("segment")
    return _png(fig)


def projection_plot(seg: Segmentation, params: ProfileParams) -> str:
    n = len(seg.labels)
    rng = np.random.default_rng(params.seed)
    shown = np.arange(n) if n <= params.report_points else rng.choice(n, params.report_points, replace=False)
    fig = Figure(figsize=(6, 5))
    ax = fig.subplots()
    for s in np.unique(seg.labels):
        at = shown[seg.labels[shown] == s]
        ax.scatter(seg.coords[at, 0], seg.coords[at, 1], s=6, alpha=0.6, label=_name(s))
    ax.legend(title="segment", markerscale=2, fontsize=8)
    ax.set_title(f"2-D projection (PCA of the clustered profiles), {len(shown)} of {n} users")
    return _png(fig)


def silhouette_plot(scores: dict[int, float]) -> str:
    fig = Figure(figsize=(5, 3.2))
    fig.subplots_adjust(left=0.18, bottom=0.18)
    ax = fig.subplots()
    ks = sorted(scores)
    ax.plot(ks, [scores[k] for k in ks], marker="o")
    ax.set_xlabel("k")
    ax.set_ylabel("mean silhouette")
    ax.set_title("choosing k: the highest silhouette wins")
    return _png(fig)


def _segment_rows(segments: list[dict]) -> str:
    rows = []
    for s in segments:
        rfm = ", ".join(f"{k.upper()} {v['level']} ({v['score']})" for k, v in s["rfm"].items())
        cats = ", ".join(f"{c['category']} {c['share']:.0%}" for c in s["top_categories"]) or "-"
        said = "<br>".join(html.escape(d) for d in s["description"]) or "-"
        rows.append(
            f"<tr><td>{_name(s['segment'])}</td><td>{html.escape(s['label'])}</td><td>{s['size']}"
            f" ({s['share']:.0%})</td><td>{s['churn_rate']:.0%}</td><td>{rfm}</td><td>{html.escape(cats)}</td>"
            f"<td>{said}</td></tr>"
        )
    return "\n".join(rows)


def render(behaviour: BehaviourProfiles, seg: Segmentation, summary: dict, params: ProfileParams) -> str:
    segments = summary["segments"]
    header = (
        f"{summary['users']} users, data {summary['data_version'][:12]}, embedding of {summary['model_version']} "
        f"({summary['embedding_dim']} dims); {seg.method}: {html.escape(seg.criterion)}, "
        f"{summary['k']} segments, silhouette {seg.silhouette}; churned = quiet for more than "
        f"{summary['churn_days']:g} days at the data's end ({summary['reference_time']})"
    )
    plots = [sizes_plot(segments), distributions_plot(behaviour, seg.labels), projection_plot(seg, params)]
    if seg.scores:
        plots.append(silhouette_plot(seg.scores))
    table = (
        "<table><tr><th>segment</th><th>label</th><th>users</th><th>churn</th><th>RFM</th>"
        "<th>top categories</th><th>what sets it apart</th></tr>" + _segment_rows(segments) + "</table>"
    )
    style = "body{font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;padding:4px;vertical-align:top}"
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>seqops segments</title><style>{style}"
        f"table{{border-collapse:collapse}}</style></head><body><h1>Segments</h1><p>{header}</p>{table}"
        + "".join(f"<p>{p}</p>" for p in plots)
        + "</body></html>"
    )


def write_report(
    folder: Path, behaviour: BehaviourProfiles, seg: Segmentation, summary: dict, params: ProfileParams
) -> Path:
    """Write `folder/segments.html` (one rename); returns its path."""
    path = folder / "segments.html"
    write_bytes_atomic(path, render(behaviour, seg, summary, params).encode())
    return path
