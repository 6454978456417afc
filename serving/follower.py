"""Which model the service answers with: follow the registry's champion pointer and load each new
version on a side thread while the old one keeps answering (one reference swap).

A registry that cannot name a loadable champion (a damaged pointer, one naming a version whose
files are gone, an unreachable registry) never stops the process: at start there is simply no
champion (`problem` says why, the service is not ready); while serving, the last good champion keeps
answering. Either way the problem is logged once per change of the pointer, not once per poll, and a
repaired pointer is picked up as usual. A Bento started without a registry serves the version
packaged in it ($SEQOPS_PINNED_VERSION, see serving/package.py).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import torch

from seqops.config import Params, Paths
from seqops.models.release.registry import Registry, RegistryError
from seqops.serving.champion import Champion
from seqops.serving.package import PINNED_ENV

log = logging.getLogger("seqops.serving")

REGISTRY_RETRY_S = 5.0  # how often a registry that could not be opened is tried again
_UNSEEN = object()  # the pointer state before the first read


class ChampionFollower:
    def __init__(self, paths: Paths, params: Params, *, quantized: bool, registry: Registry | None = None):
        self.paths, self.params, self.quantized, self.registry = paths, params, quantized, registry
        self.champion: Champion | None = None
        self.problem: str | None = None  # why no champion is loaded (None: there just is none yet)
        self._registry_retry_at, self._registry_error = 0.0, ""
        self._pointer_seen: object = _UNSEEN  # the pointer state last acted on: a version, None, or a problem
        self._loading: threading.Thread | None = None
        self.follow()  # loads the registry's champion, or says why it cannot
        if self.champion is None and self.problem is None and os.environ.get(PINNED_ENV):
            self.champion = self._pinned(os.environ[PINNED_ENV])
            log.info(
                "serving %s packaged in this Bento (heads: %s)", self.champion.version, ", ".join(self.champion.heads)
            )

    def follow(self) -> None:
        """Read the champion pointer and act only on a change since the last read: a new version is
        loaded (at once while nothing is served, else on a side thread while the old one answers);
        a pointer that cannot be read or names a model that cannot be loaded is logged once."""
        try:
            version, problem = self._registry().champion(), None
        except RegistryError as exc:  # damaged pointer, unreachable PostgreSQL, bad registry settings
            version, problem = None, str(exc)
        state = problem or version
        if state == self._pointer_seen or (self._loading is not None and self._loading.is_alive()):
            return  # nothing new, or a load is under way: look again at the next poll
        self._pointer_seen = state
        if problem is not None:
            self._report(problem)
        elif version is None or (self.champion is not None and version == self.champion.version):
            self.problem = None
        elif self.champion is None:
            self._load(version)
        else:
            self._loading = threading.Thread(target=self._load, args=(version,), daemon=True, name="champion-load")
            self._loading.start()

    def wait_for_load(self, timeout: float = 60) -> None:
        if self._loading is not None:
            self._loading.join(timeout)

    def _registry(self) -> Registry:
        """The project's registry, opened on first use; an open that failed is retried at most every
        REGISTRY_RETRY_S (a PostgreSQL connect can take seconds)."""
        if self.registry is None:
            if time.monotonic() < self._registry_retry_at:
                raise RegistryError(self._registry_error)
            self._registry_retry_at = time.monotonic() + REGISTRY_RETRY_S
            try:
                self.registry = Registry(self.paths, self.params.registry)
            except RegistryError as exc:
                self._registry_error = str(exc)
                raise
        return self.registry

    def _load(self, version: str) -> None:
        torch.set_num_threads(self.params.serving.torch_threads)
        try:
            champion = Champion.load(self.registry, version, quantized=self.quantized)
        except Exception as exc:  # noqa: BLE001 - a model that cannot load must not stop the service
            self._report(f"champion {version} cannot be loaded: {type(exc).__name__}: {exc}")
            return
        self.champion, self.problem = champion, None  # one reference swap: a batch holds the object it started with
        log.info("serving champion %s (heads: %s, quantized: %s)", version, ", ".join(champion.heads), self.quantized)

    def _report(self, problem: str) -> None:
        """One log line per new problem: not ready when nothing is served, else keep the last good one."""
        if self.champion is None:
            self.problem = problem
            log.error("not ready: %s", problem)
        else:
            log.warning("%s; still serving %s", problem, self.champion.version)

    def _pinned(self, version: str) -> Champion:
        """The model packaged in a Bento (BentoML's own store), when no registry names a champion."""
        import bentoml

        from seqops.models.release.registry import MODEL_NAME

        path = Path(bentoml.models.get(f"{MODEL_NAME}:{version}").path)
        return Champion.from_dir(path, version, quantized=self.quantized)


__all__ = ["ChampionFollower"]
