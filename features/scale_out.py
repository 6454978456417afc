"""A private namespace in the scale-out profile's shared services, for tests and benchmarks that run
beside other users of the same Redis and PostgreSQL: its own registry database and its own Feast
project name (so its own Redis keys), removed again afterwards."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import yaml

from seqops.config import Paths
from seqops.features import store

# the machine's local PostgreSQL (trust auth, local only: docs/security.md)
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def reachable(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


def services_up() -> bool:
    """Redis and PostgreSQL answer on their default local ports."""
    return reachable(6379) and reachable(5432)


def isolate(project: Path, prefix: str = "seqops_private", profile: str = "scale_out") -> str:
    """Create a fresh registry database and point the project's copy of a profile using the shared
    services (scale_out, spark) at it under a fresh Feast project name; returns the database's name
    (for `remove`)."""
    import psycopg

    suffix = uuid.uuid4().hex[:8]
    database = f"{prefix}_{suffix}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {database}")
    path = project / "feature_repo" / "profiles" / profile / "feature_store.yaml"
    config = yaml.safe_load(path.read_text())
    config["project"] = database  # own Redis keys and registry rows
    config["registry"]["path"] = f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}"
    path.write_text(yaml.safe_dump(config))
    return database


def remove(project: Path, database: str, profile: str = "scale_out") -> None:
    """Drop the namespace's Redis keys (Feast teardown) and its registry database."""
    import psycopg

    try:
        store.open_store(Paths(project), profile).teardown()
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
