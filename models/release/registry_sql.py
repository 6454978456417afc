"""PostgreSQL registry store, for a team that shares one registry (`registry.backend: postgres`).

Three tables hold what the local store keeps in files — version metadata, the champion pointer and
the audit log — one row set per `registry.namespace`. Model files stay in the BentoML store.

Every write runs inside one transaction that first takes `pg_advisory_xact_lock(namespace)`. One
advisory lock (rather than `SELECT ... FOR UPDATE` on the pointer row) because registering a
version also has to be serialised — version numbers are counted — and a row lock needs the row to
exist first. The lock is released at commit or rollback, and when a killed client's connection
drops, the server rolls its transaction back: a promote is all (pointer + audit entry) or nothing.

Rows are checked against the same schemas as the local files when read. The DSN's password never
appears in a message (`redact_dsn`).
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from seqops.models.release.registry_schema import (
    AuditEntry,
    Pointer,
    RegistryError,
    VersionMeta,
    checked,
    empty_pointer,
    version_number,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS seqops_registry_versions (
    namespace text NOT NULL, version text NOT NULL, meta jsonb NOT NULL,
    PRIMARY KEY (namespace, version));
CREATE TABLE IF NOT EXISTS seqops_registry_pointer (
    namespace text PRIMARY KEY, pointer jsonb NOT NULL);
CREATE TABLE IF NOT EXISTS seqops_registry_audit (
    namespace text NOT NULL, seq integer NOT NULL, entry jsonb NOT NULL,
    PRIMARY KEY (namespace, seq));
"""
SCHEMA_LOCK = "seqops-registry-schema"  # concurrent CREATE TABLE IF NOT EXISTS can still collide


REDACTED = "***"
URL_PASSWORD = re.compile(r"(?P<keep>://[^/?#@:]*:)[^@/?#]*(?=@)")  # postgresql://user:PASSWORD@host
KEYWORD_PASSWORD = re.compile(
    r"(?P<keep>password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]+)", re.IGNORECASE
)  # password=... / ?password=...


def redact_dsn(text: str, dsn: str | None = None) -> str:
    """`text` with every password removed: URL userinfo, `password=` keywords and parameters, and —
    when `dsn` is given — its password wherever else it appears (a driver may echo parts of it)."""
    secret = _password(dsn) if dsn else None
    if secret:
        text = text.replace(secret, REDACTED)
    text = URL_PASSWORD.sub(rf"\g<keep>{REDACTED}", text)
    return KEYWORD_PASSWORD.sub(rf"\g<keep>{REDACTED}", text)


def _password(dsn: str) -> str | None:
    try:
        return psycopg.conninfo.conninfo_to_dict(dsn).get("password") or None
    except psycopg.ProgrammingError:  # not parseable: the patterns still catch the usual spellings
        return None


def _jsonb(value: Any) -> Jsonb:
    return Jsonb(value, dumps=partial(json.dumps, default=str))


class PostgresStore:
    def __init__(self, dsn: str, namespace: str):
        self.dsn, self.namespace = dsn, namespace
        self._conn: psycopg.Connection | None = None
        self._pid = -1
        self._mutex = threading.RLock()  # one connection per store; threads (the service) take turns
        with self.locked(SCHEMA_LOCK):
            self._connection().execute(SCHEMA)

    def _connection(self) -> psycopg.Connection:
        """A connection of this process (a forked child must not share its parent's socket)."""
        if self._conn is None or self._conn.closed or self._pid != os.getpid():
            try:
                self._conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=5)
            except psycopg.Error as exc:
                reason = " ".join(str(exc).split())  # psycopg's message spans lines
                raise RegistryError(
                    f"cannot reach the PostgreSQL registry at {redact_dsn(self.dsn)}: {redact_dsn(reason, self.dsn)}"
                ) from None
            self._pid = os.getpid()
        return self._conn

    @contextmanager
    def locked(self, key: str | None = None) -> Iterator[None]:
        with self._mutex:
            conn = self._connection()
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:  # nested: already held
                yield
                return
            with conn.transaction():
                conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtext(%s))", (key or f"seqops-registry:{self.namespace}",)
                )
                yield

    def _rows(self, sql: str, *args: Any) -> list[tuple]:
        with self._mutex:
            return self._connection().execute(sql, (self.namespace, *args)).fetchall()

    def _write(self, sql: str, *args: Any) -> None:
        with self._mutex:
            self._connection().execute(sql, (self.namespace, *args))

    def _where(self, table: str, key: str = "") -> str:
        return f"PostgreSQL table seqops_registry_{table} (namespace {self.namespace!r}{key})"

    def get(self, version: str) -> dict | None:
        rows = self._rows("SELECT meta FROM seqops_registry_versions WHERE namespace = %s AND version = %s", version)
        return checked(VersionMeta, rows[0][0], self._where("versions", f", version {version!r}")) if rows else None

    def versions(self) -> list[dict]:
        rows = self._rows("SELECT version, meta FROM seqops_registry_versions WHERE namespace = %s")
        metas = [
            checked(VersionMeta, meta, self._where("versions", f", version {version!r}")) for version, meta in rows
        ]
        return sorted(metas, key=lambda m: version_number(m["version"]))

    def put(self, meta: dict) -> None:
        self._write(
            "INSERT INTO seqops_registry_versions (namespace, version, meta) VALUES (%s, %s, %s) "
            "ON CONFLICT (namespace, version) DO UPDATE SET meta = EXCLUDED.meta",
            meta["version"],
            _jsonb(meta),
        )

    def pointer(self) -> dict:
        rows = self._rows("SELECT pointer FROM seqops_registry_pointer WHERE namespace = %s")
        return {**empty_pointer(), **checked(Pointer, rows[0][0], self._where("pointer"))} if rows else empty_pointer()

    def set_pointer(self, pointer: dict) -> None:
        self._write(
            "INSERT INTO seqops_registry_pointer (namespace, pointer) VALUES (%s, %s) "
            "ON CONFLICT (namespace) DO UPDATE SET pointer = EXCLUDED.pointer",
            _jsonb(pointer),
        )

    def audit(self) -> list[dict]:
        rows = self._rows("SELECT seq, entry FROM seqops_registry_audit WHERE namespace = %s ORDER BY seq")
        return [checked(AuditEntry, entry, self._where("audit", f", seq {seq}")) for seq, entry in rows]

    history = audit  # pointer and audit entry commit together: nothing is ever pending

    def append_audit(self, entry: dict) -> None:
        self._write(
            "INSERT INTO seqops_registry_audit (namespace, seq, entry) VALUES (%s, %s, %s)", entry["seq"], _jsonb(entry)
        )

    def drop_namespace(self) -> None:
        """Remove every row of this namespace (tests; retiring a registry)."""
        with self.locked():
            for table in ("versions", "pointer", "audit"):
                self._write(f"DELETE FROM seqops_registry_{table} WHERE namespace = %s")
