"""The one error the engine raises for a request it cannot answer as asked."""

from __future__ import annotations


class RequestError(Exception):
    """A request that is well-formed but cannot be answered as asked (unknown item, missing head)."""

    def __init__(self, status: int, message: str, loc: tuple = ()):
        super().__init__(message)
        self.status, self.message, self.loc = status, message, loc

    def body(self) -> dict:
        return {"error": self.message, "detail": [{"loc": list(self.loc), "msg": self.message}] if self.loc else []}
