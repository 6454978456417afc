"""The gate's off-policy view: the click and purchase rates the candidate would get as the policy
behind the answers the service gave while exploring, estimated from the request log
(serving/impressions.py) and the events that followed them (landed by /events, ingested by this
retrain), against the rate the logged policy actually got. Non-blocking unless `gate.ope.blocking`.

Per logged answer: the user's history at the answer's time is rebuilt from the ingested events; the
candidate, loaded as the service would load it (serving/champion.py), scores it with the answer's
own category and exclude_seen; its policy (`gate.ope.target`: as served under `serving.explore`, or
greedy) gives every one of its top max(candidates, k) items an inclusion probability
(serving/explore.py); the estimators (models/release/ope.py) weigh the logged responses by those
over the logged propensities. Answers whose response window has not closed yet, of users or items
the vocabulary does not know, or without any history are left out and counted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from seqops.config import GateParams, Params, Paths
from seqops.config_ope import OPE_REWARDS, ExploreParams
from seqops.models.release.ope import ESTIMATORS, Logged, all_terms, cross_fitted_rates, effective_size, estimate
from seqops.models.release.policy import Check
from seqops.serving.champion import Champion
from seqops.serving.explore import inclusion_probabilities
from seqops.serving.impressions import join_responses, read_impressions
from seqops.serving.ranking import recommend_items

SCORE_BATCH = 1024


def ope_view(paths: Paths, params: Params, model_dir: Path, version: str) -> dict:
    """Estimates for the candidate in `model_dir` from the logged exploring answers (see the module docstring)."""
    op = params.gate.ope
    head = {"target": op.target, "reward": op.reward, "estimator": op.estimator, "window_s": op.window_s}
    shown = read_impressions(paths.logs / "requests", limit=op.max_impressions)
    head["answers_logged"] = int(shown["impression"].nunique())
    if shown.empty:
        return {**head, "status": "no_data", "answers": 0, "left_out": {}}
    users = _vocab(paths.vocab / "users.parquet", "user_id")
    items = _vocab(paths.vocab / "items.parquet", "item_id")
    shown = shown.assign(user=shown["user_id"].map(users), item=shown["item_id"].map(items))
    open_ = shown["time"] + pd.Timedelta(seconds=op.window_s) > pd.Timestamp.now(tz="UTC")
    unknown = shown["impression"].isin(shown.loc[shown["user"].isna() | shown["item"].isna(), "impression"])
    left_out = {
        "window still open": int(shown.loc[open_, "impression"].nunique()),
        "unknown user or item": int(shown.loc[~open_ & unknown, "impression"].nunique()),
    }
    shown = shown[~open_ & ~unknown].astype({"user": np.int64, "item": np.int64})
    events = pd.read_parquet(paths.events, columns=["user_id", "item_id", "ts", "event_type"])
    events = events.rename(columns={"ts": "time"}).sort_values("time", kind="stable")
    rewards = dict(zip(OPE_REWARDS, (op.click_events, op.purchase_events)))
    joined = join_responses(shown.assign(user_id=shown["user"], item_id=shown["item"]), events, op.window_s, rewards)
    champion = Champion.from_dir(model_dir, version, quantized=False)
    target = params.serving.explore if op.target == "serving" else ExploreParams(policy="off")
    policy = target_policy(champion, joined, events, params.features.max_len, target, items)
    left_out["no history"] = policy.pop("no_history")
    n = len(policy["size"])
    if n == 0:
        return {**head, "status": "no_data", "answers": 0, "left_out": left_out}
    status = "ok" if n >= op.min_impressions else "too_few"
    return {**head, "status": status, "left_out": left_out, **_estimates(policy, params.gate)}


def _vocab(path: Path, column: str) -> pd.Series:
    table = pd.read_parquet(path, columns=["raw_id", column])
    return pd.Series(table[column].to_numpy(), index=table["raw_id"].astype(str))


def target_policy(
    champion: Champion, joined: pd.DataFrame, events: pd.DataFrame, max_len: int, target: ExploreParams, items
) -> dict:
    """Per answer with a history: the target's candidates and inclusion probabilities, and per shown
    item its logged and target propensities and responses (answers renumbered 0..n-1)."""
    answers = joined.groupby("impression", sort=True).first()
    histories = _histories_before(events, answers["user"].to_numpy(), answers["time"], max_len)
    keep = np.array([len(items_) > 0 for items_, _ in histories], dtype=bool)
    answers, histories = answers[keep], [h for h, k in zip(histories, keep) if k]
    sizes = answers["size"].to_numpy(np.int64)
    width = max([target.candidates, *sizes], default=1)
    pool, probs = np.zeros((len(answers), width), np.int64), np.zeros((len(answers), width))
    unsupported = np.zeros(len(answers))
    context = answers[["category", "exclude_seen", "candidates"]].to_numpy()
    for start in range(0, len(answers), SCORE_BATCH):
        batch = histories[start : start + SCORE_BATCH]
        scores = champion.next_item_scores([h for h, _ in batch], [t for _, t in batch])
        for row, score, (history, _) in zip(range(start, start + len(batch)), scores, batch):
            category, exclude_seen, logged = context[row]
            exclude = history if exclude_seen else np.zeros(0, np.int64)
            top, top_scores = recommend_items(
                _only(champion, score, category), exclude, max(sizes[row], target.candidates)
            )
            p = inclusion_probabilities(top_scores[None], sizes[row], target)[0]
            pool[row, : len(top)], probs[row, : len(top)] = top, p
            supported = {items.get(str(raw)) for raw in logged or []}
            unsupported[row] = p[[t not in supported for t in top]].sum() / sizes[row]
    rows = joined[joined["impression"].isin(answers.index)]
    slate = pd.Index(answers.index).get_indexer(rows["impression"])
    same = pool[slate] == rows["item"].to_numpy()[:, None]
    return {
        "slate": slate,
        "item": rows["item"].to_numpy(),
        "logging_p": rows["propensity"].to_numpy(float),
        "target_p": np.where(same, probs[slate], 0.0).sum(axis=1),
        "size": sizes.astype(float),
        "responses": {name: rows[name].to_numpy(float) for name in OPE_REWARDS},
        "pool": pool,
        "probs": probs,
        "unsupported": unsupported,
        "n_items": int(max(champion.n_items, rows["item"].max() if len(rows) else 0)) + 1,  # rate-table size
        "no_history": int((~keep).sum()),
    }


def _only(champion: Champion, scores: np.ndarray, category: str | None) -> np.ndarray:
    """The answer's own filter: items of its category only (an unknown category leaves nothing)."""
    if category is None or pd.isna(category):
        return scores
    mask = champion.category_masks.get(str(category), np.zeros(len(scores), dtype=bool))
    return np.where(mask, scores, -np.inf)


def _histories_before(
    events: pd.DataFrame, users: np.ndarray, times: pd.Series, max_len: int
) -> list[tuple[np.ndarray, list]]:
    """Each (user, time): the user's last `max_len` items and event types strictly before `time`
    (`events` in time order)."""
    wanted = events[events["user_id"].isin(np.unique(users))]
    by_user = {
        user: (
            group["time"].astype("datetime64[ns, UTC]").to_numpy(),
            group["item_id"].to_numpy(np.int64),
            group["event_type"].astype(str).to_numpy(),
        )
        for user, group in wanted.groupby("user_id", sort=False)
    }
    empty = (np.zeros(0, "datetime64[ns]"), np.zeros(0, np.int64), np.zeros(0, str))
    out = []
    for user, when in zip(users, pd.to_datetime(times, utc=True).astype("datetime64[ns, UTC]").to_numpy()):
        stamps, items, types = by_user.get(user, empty)
        end = int(np.searchsorted(stamps, when, side="left"))
        begin = max(0, end - max_len)
        out.append((items[begin:end], types[begin:end].tolist()))
    return out


def _estimates(policy: dict, gp: GateParams) -> dict:
    """Per reward: the logged rate and the three estimates with intervals, and each estimate's paired
    difference to the logged rate; diagnostics (effective answers, the target's unsupported mass)."""
    out: dict = {"answers": len(policy["size"]), "items_shown": len(policy["slate"]), "estimates": {}, "deltas": {}}
    settings = {"confidence": gp.confidence, "interval": gp.ope.interval, "samples": gp.bootstrap_samples}
    for name in OPE_REWARDS:
        reward = policy["responses"][name]
        data = Logged(policy["slate"], reward, policy["logging_p"], policy["target_p"], policy["size"])
        fold, tables = cross_fitted_rates(data.slate, policy["item"], reward, data.n, policy["n_items"])
        reward_hat = tables[fold[data.slate], policy["item"]]
        direct = (policy["probs"] * tables[fold[:, None], policy["pool"]]).sum(axis=1) / data.size
        terms = all_terms(data, reward_hat, direct)
        out["estimates"][name] = {k: estimate(terms[k], **settings).as_dict() for k in ("logged", *ESTIMATORS)}
        out["deltas"][name] = {k: estimate(terms[k], terms["logged"], **settings).as_dict() for k in ESTIMATORS}
        out["effective_answers"] = round(effective_size(data), 1)  # the weights are the same for both rewards
    out["unsupported_mass"] = float(policy["unsupported"].mean())
    return out


def ope_check(view: dict, gp: GateParams) -> Check | None:
    """The `ope` check (blocking only with gate.ope.blocking); None when no exploring answer was
    logged at all (exploration off: the gate decides as it always did)."""
    op = gp.ope
    if not view.get("answers_logged"):
        return None
    if view["status"] != "ok":
        skipped = ", ".join(f"{n} {why}" for why, n in view["left_out"].items()) or "none"
        return Check(
            "ope",
            float(view["answers"]),
            float(op.min_impressions),
            True,
            op.blocking,
            f"Off-policy view: {view['answers']} usable exploring answers of {view['answers_logged']} logged "
            f"(left out: {skipped}); at least {op.min_impressions} are needed to judge — informs only.",
        )
    cand, logged = view["estimates"][op.reward][op.estimator], view["estimates"][op.reward]["logged"]
    delta = view["deltas"][op.reward][op.estimator]
    ok = delta["high"] >= -op.max_regression
    return Check(
        "ope",
        delta["high"],
        -op.max_regression + 0.0,
        ok,
        op.blocking,
        f"Off-policy ({op.estimator.upper()}, {op.reward} rate per shown item, {view['answers']} logged exploring "
        f"answers, candidate as {op.target}): candidate {cand['value']:.4f} ({gp.confidence:.0%} CI "
        f"{cand['low']:.4f} … {cand['high']:.4f}) vs logged {logged['value']:.4f}; difference {delta['value']:+.4f} "
        f"(CI {delta['low']:+.4f} … {delta['high']:+.4f}) — "
        f"{'no significant drop' if ok else 'a significant drop'} "
        f"({f'bar -{op.max_regression:.4f}' if op.max_regression else 'bar: any significant drop'}; "
        f"{'blocks' if op.blocking else 'informs only'}).",
    )
