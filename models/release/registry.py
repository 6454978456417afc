"""Model registry: model versions live in the BentoML model store; the champion pointer, the version
metadata and the append-only audit log live in a registry store chosen by `params.yaml` `registry:`
— files under `.seqops/registry/` (local, the default) or PostgreSQL tables (`registry_sql.py`) for
a team that shares one registry.

Every write happens while holding the store's lock (a file lock, or a PostgreSQL advisory lock
inside one transaction), so two promotes serialise and neither loses the other's update. The local
champion pointer changes with one `os.replace`; the audit entry of that change travels inside the
pointer too, so a crash between the rename and the audit append is repaired by the next writer
(and `history()` already shows it). A crash at any point therefore leaves the old champion or the
new one — never a missing or half-written pointer — and an audit log that agrees with it.

Every record read back is checked against its schema (`registry_schema.py`): a damaged one raises
`DamagedRegistryError` naming the file and the field. Files are created with explicit modes (0644,
directories 0755), whatever the process umask.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

from seqops.config import ConfigError, Paths, RegistryParams, load_params
from seqops.io import crash_point, now_iso
from seqops.models.release.registry_files import LocalStore
from seqops.models.release.registry_schema import (
    DamagedRegistryError,
    RegistryError,
    Store,
    VersionMeta,
    check_version,
    checked,
    version_number,
)

MODEL_NAME = "seqops-recommender"
DSN_ENV = "SEQOPS_REGISTRY_DSN"
ACTOR_ENV = "SEQOPS_ACTOR"


class MissingModelError(RegistryError):
    """The registry knows the version but the BentoML store has no model files for it."""


def use_bentoml_home(paths: Paths) -> None:
    """Keep the BentoML store inside the project's state root (must run before importing bentoml)."""
    os.environ.setdefault("BENTOML_HOME", str(paths.bentoml_home))


BENTOML_FILES = {"model.yaml"}  # what BentoML adds to a stored model directory


def content_hash(artifact_dir: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(
        p
        for p in artifact_dir.rglob("*")
        if p.is_file() and p.relative_to(artifact_dir).as_posix() not in BENTOML_FILES
    ):
        digest.update(file.relative_to(artifact_dir).as_posix().encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()[:10]


def default_actor() -> str:
    """Who acts: $SEQOPS_ACTOR, else the OS user (containers may have no passwd entry)."""
    try:
        return os.environ.get(ACTOR_ENV) or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def storable(meta: dict) -> dict:
    """`meta` once it is version metadata the registry would read back (never write what it would refuse)."""
    try:
        return checked(VersionMeta, meta, meta["version"])
    except DamagedRegistryError as exc:
        raise RegistryError(f"refusing to store the metadata of {exc.where}: {exc.problem}") from None


def registry_settings(paths: Paths) -> RegistryParams:
    """The `registry:` section of the project's params.yaml (defaults when there is none): for
    callers without the project's params at hand (tools, tests); entry points pass theirs."""
    params_file = paths.project / "params.yaml"
    if not params_file.exists():
        return RegistryParams()
    try:
        return load_params(params_file).registry
    except ConfigError as exc:
        raise RegistryError(str(exc)) from None


def open_store(paths: Paths, settings: RegistryParams) -> Store:
    if settings.backend == "postgres":
        from seqops.models.release.registry_sql import PostgresStore

        return PostgresStore(os.environ.get(DSN_ENV) or settings.postgres_dsn, settings.namespace)
    return LocalStore(paths.registry)


class Registry:
    def __init__(self, paths: Paths, settings: RegistryParams):
        self.paths = paths
        self.root = paths.registry
        self.settings = settings
        self.store = open_store(paths, self.settings)
        use_bentoml_home(paths)
        from bentoml._internal.models.model import ModelStore

        # BentoML's default store is a process-wide singleton; bind this project's store explicitly.
        (paths.bentoml_home / "models").mkdir(parents=True, exist_ok=True)
        self._store = ModelStore(str(paths.bentoml_home / "models"))

    @classmethod
    def of_project(cls, paths: Paths) -> "Registry":
        """The registry the project's params.yaml configures (reads its `registry:` section)."""
        return cls(paths, registry_settings(paths))

    # -- reading ---------------------------------------------------------------------------
    def get(self, version: str) -> dict:
        meta = self.store.get(check_version(version))
        if meta is None:
            raise RegistryError(f"unknown model version {version!r} (see `seqops models`)")
        return meta

    def versions(self) -> list[dict]:
        return self.store.versions()

    def pointer(self) -> dict:
        """{"champion", "previous" (newest first), "updated_at", "event" (the audit entry of the last move)}."""
        return self.store.pointer()

    def champion(self) -> str | None:
        return self.pointer()["champion"]

    def model_dir(self, version: str) -> Path:
        import bentoml

        try:
            return Path(bentoml.models.get(f"{MODEL_NAME}:{check_version(version)}", _model_store=self._store).path)
        except bentoml.exceptions.NotFound:
            raise MissingModelError(
                f"the model files of {version} are missing from the BentoML store "
                f"({self.paths.bentoml_home}); it cannot serve"
            ) from None

    def history(self) -> list[dict]:
        """The audit log, oldest first (each entry: seq, time, actor, action, version, previous, reason)."""
        return self.store.history()

    def latest_candidate(self) -> str:
        gated = [v for v in self.versions() if v.get("decision")]
        if not gated:
            raise RegistryError("no gated candidate yet: run `seqops gate` or the retrain flow first")
        return gated[-1]["version"]

    # -- writing ---------------------------------------------------------------------------
    def register(self, artifact_dir: Path, metadata: dict) -> str:
        """Store a trained artifact as a new version (idempotent: same content → same version)."""
        import bentoml

        digest = content_hash(artifact_dir)
        with self.store.locked():
            versions = self.versions()
            for existing in versions:
                if existing["content_hash"] == digest:
                    return existing["version"]
            number = max((version_number(v["version"]) for v in versions), default=0) + 1
            version = f"v{number:04d}-{digest[:6]}"
            meta = storable(
                {**metadata, "version": version, "content_hash": digest, "created_at": now_iso(), "decision": None}
            )
            if not self._stored_intact(version, digest):
                with bentoml.models.create(
                    f"{MODEL_NAME}:{version}",
                    labels={"stage": "candidate"},
                    metadata={"version": version},
                    _model_store=self._store,
                ) as model:
                    shutil.copytree(artifact_dir, model.path, dirs_exist_ok=True)
            self.store.put(meta)
            self.store.append_audit(
                self._entry("register", version, metadata.get("actor") or default_actor(), "trained")
            )
        return version

    def _stored_intact(self, version: str, digest: str) -> bool:
        """Is this tag already in the BentoML store with exactly this content? (Another registry on
        the same store put it there: reuse it.) A partial copy left by a killed writer is removed."""
        try:
            path = self.model_dir(version)
        except MissingModelError:
            return False
        if content_hash(path) == digest:
            return True
        self._store.delete(f"{MODEL_NAME}:{version}")
        return False

    def record_decision(self, version: str, decision: dict) -> None:
        with self.store.locked():
            self.store.put(storable({**self.get(version), "decision": decision}))

    def adopt_decision(self, refit: str, candidate: str) -> dict:
        """Give the refit of `candidate` the candidate's gate decision, marked as adopted (the gate
        evaluated the candidate; the refit trained on its held-out events and cannot be scored on
        them), and note on the candidate which version serves it. Returns the refit's decision."""
        with self.store.locked():
            refit_meta, candidate_meta = self.get(refit), self.get(candidate)
            if refit_meta.get("refit_of") != candidate:
                raise RegistryError(f"{refit} is not a refit of {candidate} (refit_of: {refit_meta.get('refit_of')})")
            decision = candidate_meta.get("decision")
            if not decision:
                raise RegistryError(f"{candidate} has no gate decision to adopt")
            adopted = {
                **decision,
                "served_as": refit,
                "adopted_from": candidate,
                "note": f"{refit} is {candidate} refitted on every event up to the cut; "
                f"the metrics and checks are {candidate}'s (the refit's own evaluation is the next batch's)",
            }
            self.store.put(storable({**refit_meta, "decision": adopted}))
            self.store.put(storable({**candidate_meta, "served_as": refit}))
        return adopted

    def promote(
        self, version: str | None = None, *, actor: str | None = None, reason: str = "", force: bool = False
    ) -> str:
        """Make `version` (default: the latest gated candidate) the champion. A version the gate did
        not approve needs `force` and a reason; both, with who did it, land in the audit log."""
        with self.store.locked():
            version = self.latest_candidate() if version is None else version  # "" is no version, not "the latest"
            verdict = (self.get(version).get("decision") or {}).get("verdict")
            approved = verdict == "promote"
            if not approved and not force:
                raise RegistryError(
                    f"{version} was not approved by the gate (verdict: {verdict or 'not gated'}); "
                    "use --force --reason '...' to override"
                )
            if not approved and not reason.strip():
                raise RegistryError("a forced promote needs --reason (it is recorded in the audit log)")
            self.model_dir(version)  # MissingModelError unless the files are in the store
            pointer = self.pointer()
            if pointer["champion"] == version:
                return version
            action = "promote" if approved else "promote-forced"
            self._move(pointer, version, action, actor, reason or "gate approved", verdict=verdict)
        return version

    def rollback(self, *, actor: str | None = None, reason: str = "") -> str:
        """Return to the previous champion (the exact model files it was served from)."""
        with self.store.locked():
            pointer = self.pointer()
            if not pointer["previous"]:
                raise RegistryError("nothing to roll back to: there is no previous champion")
            target = pointer["previous"][0]
            self.model_dir(target)
            self._move(pointer, target, "rollback", actor, reason or "manual rollback", rolled_back=True)
        return target

    def _move(
        self,
        pointer: dict,
        version: str,
        action: str,
        actor: str | None,
        reason: str,
        *,
        verdict: str | None = None,
        rolled_back: bool = False,
    ) -> None:
        """The one place the champion changes: pointer (with its audit entry) first, then the log."""
        old = pointer["champion"]
        stack = pointer["previous"][1:] if rolled_back else [old, *pointer["previous"]]
        previous = [v for v in stack if v and v != version]
        entry = self._entry(action, version, actor or default_actor(), reason, previous=old, verdict=verdict)
        crash_point("before-pointer")
        self.store.set_pointer({"champion": version, "previous": previous, "updated_at": entry["time"], "event": entry})
        crash_point("after-pointer")
        self.store.append_audit(entry)
        crash_point("after-audit")

    def _entry(self, action: str, version: str, actor: str, reason: str, **extra: Any) -> dict:
        entries = self.history()
        seq = entries[-1]["seq"] + 1 if entries else 1
        return {
            "seq": seq,
            "time": now_iso(),
            "actor": actor,
            "action": action,
            "version": version,
            "reason": reason,
            **{k: v for k, v in extra.items() if v is not None},
        }
