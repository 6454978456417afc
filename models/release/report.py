"""`decision.html`: one self-contained page per gate decision — the verdict and its reasons, the
metric comparison with bootstrap intervals, what drifted and by how much, data quality, and links
to the Evidently reports beside it. No scripts, no external assets: it opens from disk anywhere.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:980px;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
.verdict{display:inline-block;padding:2px 10px;border-radius:4px;color:#fff;font-weight:600}
.promote{background:#2e7d32}.reject{background:#c62828}.bad{color:#c62828;font-weight:600}.ok{color:#2e7d32}
.muted{color:#777}svg{vertical-align:middle}
"""


def _num(value: object, fmt: str = ".4f") -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "–"
    return (
        str(int(value)) if float(value).is_integer() and abs(value) >= 1 else format(value + 0.0, fmt)
    )  # no "-0.0000"


def _table(head: list[str], rows: list[list[str]]) -> str:
    """Cells are already-escaped HTML."""
    header = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{header}</tr>{body}</table>"


def _interval_svg(low: float, high: float, delta: float, bar: float | None, span: float) -> str:
    """A 220 px strip: zero line, the policy bar (dashed), the interval and its point estimate."""
    width, pad = 220, 10

    def x(v: float) -> float:
        return pad + (width - 2 * pad) * (0.5 + max(-span, min(span, v)) / (2 * span))

    bar_line = (
        f'<line x1="{x(bar):.1f}" y1="2" x2="{x(bar):.1f}" y2="18" stroke="#c62828" stroke-dasharray="3,2"/>'
        if bar is not None
        else ""
    )
    return (
        f'<svg width="{width}" height="20"><line x1="{x(0):.1f}" y1="0" x2="{x(0):.1f}" y2="20" stroke="#999"/>{bar_line}'
        f'<line x1="{x(low):.1f}" y1="10" x2="{x(high):.1f}" y2="10" stroke="#1565c0" stroke-width="3"/>'
        f'<circle cx="{x(delta):.1f}" cy="10" r="4" fill="#1565c0"/></svg>'
    )


def _policy_bar(decision: dict, metric: str) -> float | None:
    """Where the deciding check draws its line on the delta axis (only for the deciding metric)."""
    policy, comparison = decision["policy"], decision["comparison"]
    if metric != policy["metric"]:
        return None
    if comparison["against"] == "popularity":
        return policy["min_uplift_vs_baseline"] * comparison["metrics"][metric]["reference"]
    return policy["min_uplift"] if policy["policy"] == "superior" else -policy["max_regression"]


def _comparison(decision: dict) -> str:
    comparison = decision["comparison"]
    if not comparison["metrics"]:
        return "<p>No held-out users: nothing to compare.</p>"
    span = max(1e-3, *(max(abs(m["low"]), abs(m["high"])) * 1.2 for m in comparison["metrics"].values()))
    rows = []
    for metric, m in comparison["metrics"].items():
        bar = _policy_bar(decision, metric)
        rows.append(
            [
                escape(metric + (" (decides)" if bar is not None else "")),
                _num(m["candidate"]),
                _num(m["reference"]),
                f"{m['delta']:+.4f}",
                f"{m['low']:+.4f} … {m['high']:+.4f}",
                _interval_svg(m["low"], m["high"], m["delta"], bar, span),
            ]
        )
    who = escape(comparison["against"])
    return (
        f"<p>Paired bootstrap over the same {comparison['n_users']} held-out users ({comparison['bootstrap_samples']} resamples, "
        f"{comparison['confidence']:.0%} two-sided interval). Grey line: no change; red dashed: the policy's bar.</p>"
        + _table(["metric", "candidate", who, "Δ", "interval", "Δ and interval"], rows)
    )


def _drift_table(drift: dict) -> str:
    rows = [
        [
            escape(col),
            escape(v["method"]),
            _num(v["score"]),
            _num(v["threshold"], "g"),
            '<span class="bad">drifted</span>' if v["drifted"] else '<span class="ok">stable</span>',
        ]
        for col, v in drift["columns"].items()
    ]
    return (
        _table(["feature", "method", "score", "threshold", "status"], rows)
        + '<p class="muted">score: a p-value for statistical tests (ks, chisquare, …: drifted below the threshold), '
        "a distance otherwise (wasserstein, jensenshannon, psi, …: drifted at or above it).</p>"
    )


def _ope(view: dict | None, blocking: bool) -> str:
    """The off-policy view (models/release/ope_view.py): estimates with intervals, per reward."""
    if not view:
        return ""
    title = "<h2>Off-policy view (logged exploration)</h2>"
    if not view.get("answers"):
        return title + (
            f"<p>No usable exploring answers ({view.get('answers_logged', 0)} logged; serving.explore.policy off "
            "logs none): nothing to estimate.</p>"
        )
    rows = []
    for reward, estimates in view["estimates"].items():
        for name, e in estimates.items():
            d = view["deltas"][reward].get(name)
            decides = " (decides)" if (reward, name) == (view["reward"], view["estimator"]) else ""
            rows.append(
                [
                    escape(reward),
                    escape(("logged policy" if name == "logged" else name.upper()) + decides),
                    _num(e["value"]),
                    f"{_num(e['low'])} … {_num(e['high'])}",
                    f"{d['value']:+.4f}" if d else "",
                    f"{d['low']:+.4f} … {d['high']:+.4f}" if d else "",
                ]
            )
    left_out = ", ".join(f"{n} {why}" for why, n in view["left_out"].items()) or "none"
    return (
        title + f"<p>The candidate as a <b>{escape(view['target'])}</b> policy, estimated on {view['answers']} of "
        f"{view['answers_logged']} logged exploring answers ({view['items_shown']} shown items; left out: {left_out}); "
        f"a response is an event on a shown item within {view['window_s']:g} s. Effective answers "
        f"{view['effective_answers']:g}; the candidate's mass outside the logged candidates "
        f"{view['unsupported_mass']:.1%} (IPS and SNIPS cannot see it, DR's model term covers it). "
        f"{'Blocking' if blocking else 'Informs only'} (gate.ope.blocking).</p>"
        + _table(["reward", "estimator", "rate per shown item", "interval", "Δ vs logged", "Δ interval"], rows)
    )


def _link(path: str | None, label: str) -> str:
    return f'<a href="{escape(Path(path).name)}">{escape(label)}</a>' if path else ""


def render_decision_html(decision: dict) -> str:
    verdict, drift, pred, quality = (
        decision["verdict"],
        decision["drift"],
        decision["prediction_drift"],
        decision["quality"],
    )
    outcome = {
        (True, True): '<span class="ok">pass</span>',
        (False, True): '<span class="bad">fail</span>',
        (True, False): '<span class="ok">calm</span>',
        (False, False): '<span class="bad">flagged</span>',
    }
    checks = [
        [
            escape(c["name"]),
            _num(c["value"]),
            _num(c["threshold"]),
            outcome[c["passed"], c["blocking"]],
            "blocks" if c["blocking"] else '<span class="muted">informs</span>',
        ]
        for c in decision["checks"]
    ]
    metrics = decision["metrics"]
    names = [k for k in metrics["candidate"] if k != "n_users"]
    metric_rows = [[escape(who)] + [_num(m.get(k)) for k in names] for who, m in metrics.items() if m]
    pred_html = (
        "<p>No champion: prediction drift not measured.</p>"
        if pred is None
        else f"<p>Top-{pred['k']} lists for the same users overlap {pred['overlap_at_k']:.0%}. "
        f"Reference: the champion's recommendations; current: the candidate's. "
        f"{_link(pred['html'], 'Evidently prediction drift report')}</p>" + _drift_table(pred)
    )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>gate {escape(decision["candidate"])}: {
        verdict
    }</title>
<style>{STYLE}</style></head><body>
<h1>Gate decision <span class="verdict {verdict}">{escape(verdict.upper())}</span> {escape(decision["candidate"])}</h1>
<p>Champion at decision time: <b>{escape(str(decision["champion"]))}</b> · {escape(decision["created_at"])} ·
protocol: {escape(decision["protocol"])} · policy: <b>{escape(decision["policy"]["policy"])}</b> on {
        escape(decision["policy"]["metric"])
    }</p>
<h2>Why</h2><ul>{"".join(f"<li>{escape(r)}</li>" for r in decision["reasons"])}</ul>
<h2>Candidate vs {escape(decision["comparison"]["against"])}</h2>{_comparison(decision)}
<h2>Checks</h2>{_table(["check", "value", "threshold", "result", "role"], checks)}
<h2>Behaviour drift</h2>
<p>{drift["drifted_columns"]} of {drift["n_columns"]} features drifted (share {
        drift["drift_share"]:.2f}; dataset drift at ≥
{drift["share_threshold"]:.2f}: <b>{"yes" if drift["dataset_drift"] else "no"}</b>). Reference: {
        drift["n_reference"]
    } users of the
champion's training data; current: {drift["n_current"]} users with new events, {
        drift["new_user_share"]:.0%} of them new users.
{_link(drift["html"], "Evidently drift + data summary report")}</p>{_drift_table(drift)}
<h2>Prediction drift</h2>{pred_html}
{_ope(decision.get("ope"), decision["policy"].get("ope", {}).get("blocking", False))}
<h2>Data quality</h2>{
        _table(
            ["measure", "value"],
            [
                ["missing values", f"{quality['missing_share']:.2%}"],
                ["quarantined at ingest", f"{quality['quarantine_share']:.2%} of {quality['rows_read']} rows"],
            ],
        )
    }
<h2>All metrics</h2>{_table(["model", *names], metric_rows)}
<p class="muted">{_link(decision["reports"]["decision_json"], "decision.json")} (everything above, machine-readable)</p>
</body></html>
"""


def write_decision_html(decision: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_decision_html(decision))
    return path
