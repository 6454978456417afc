"""What the registry's stored records must look like — the champion pointer, a version's metadata,
an audit entry — and the errors a registry operation raises.

Every record is checked when it is read (on both backends), so a damaged one (a hand edit, a disk
error, a foreign tool) is refused with one sentence naming where it is and which field is wrong,
instead of a `KeyError` or `AttributeError` deep inside a caller, or a string `previous` that the
next promote splits into characters. Version names are checked against `VERSION_PATTERN` wherever
one comes in, so a name can never become a path outside the registry.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

VERSION_PATTERN = r"v\d{4,}-[0-9a-f]{6}"  # what `Registry.register` hands out: v<number>-<content hash>
VERSION_EXAMPLE = "v0001-ab12cd"


class RegistryError(RuntimeError):
    """A registry operation was refused (unknown version, rejected candidate, nothing to roll back)."""


class DamagedRegistryError(RegistryError):
    """A stored registry record does not match its schema; `where` names the file (or table row)."""

    def __init__(self, where: str, problem: str):
        super().__init__(f"damaged registry record {where}: {problem} (repair or restore it)")
        self.where, self.problem = where, problem


def check_version(version: Any) -> str:
    """`version` if it is a version name; else a RegistryError (one sentence, never a path lookup)."""
    if not isinstance(version, str) or not re.fullmatch(VERSION_PATTERN, version):
        raise RegistryError(
            f"unknown model version {version!r}: not a version name "
            f"(versions look like {VERSION_EXAMPLE}; see `seqops models`)"
        )
    return version


Version = Annotated[str, StringConstraints(pattern=f"^{VERSION_PATTERN}$")]


class Record(BaseModel):
    # strict: JSON already has the right types, so "seq": "3" or "previous": "v0001-…" is damage,
    # not something to coerce; extra keys are allowed (metadata carries whatever training recorded)
    model_config = ConfigDict(extra="allow", strict=True)


class AuditEntry(Record):
    seq: int = Field(ge=1)
    time: str
    actor: str
    action: str
    version: Version
    reason: str
    previous: Version | None = None
    verdict: str | None = None


class Pointer(Record):
    champion: Version | None = None
    previous: list[Version] = []
    updated_at: str | None = None
    event: AuditEntry | None = None


class VersionMeta(Record):
    version: Version
    content_hash: str
    created_at: str
    decision: dict | None = None
    eval_metrics: dict | None = None
    data_version: str | None = None
    params_hash: str | None = None
    parent_version: Version | None = None
    refit_of: Version | None = None  # this version is the refit of that gated candidate (train.refit)
    served_as: Version | None = None  # this gated candidate is served as that refit


def checked(schema: type[Record], raw: Any, where: str) -> dict:
    """`raw` itself (callers keep the stored keys as they are) once it matches `schema`."""
    try:
        schema.model_validate(raw)
    except ValidationError as exc:
        raise DamagedRegistryError(where, describe(exc)) from None
    return raw


def describe(error: ValidationError) -> str:
    """The first problem as `field: message (got value)`."""
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "the record"
    got = repr(first.get("input"))
    return f"{field}: {first['msg']} (got {got[:60] + '…' if len(got) > 60 else got})"


def version_number(version: str) -> int:
    """`v0012-ab12cd` → 12 (versions sort by number, also past v9999)."""
    return int(version[1:].split("-")[0])


def empty_pointer() -> dict:
    return {"champion": None, "previous": [], "event": None}


class Store(Protocol):
    """Where the registry keeps its state. Writes happen only inside `locked()`."""

    def locked(self) -> Any: ...
    def get(self, version: str) -> dict | None: ...
    def versions(self) -> list[dict]: ...
    def put(self, meta: dict) -> None: ...
    def pointer(self) -> dict: ...
    def set_pointer(self, pointer: dict) -> None: ...
    def audit(self) -> list[dict]: ...
    def history(self) -> list[dict]: ...
    def append_audit(self, entry: dict) -> None: ...
