"""The admin route (POST /admin/forget) always needs the bearer token, whatever `serving.auth` says;
with no token configured it is closed, not open."""

import asyncio

import httpx
import pytest

from seqops.config import ServingParams
from seqops.serving.guard import Guard

TOKEN = "admin-guard-token-9c2b"


async def ok_app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def status(auth: str, token: str | None, headers: dict | None = None) -> int:
    app = Guard(ok_app, ServingParams(auth=auth), token)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://guarded") as client:
        return (await client.post("/admin/forget", json={}, headers=headers or {})).status_code


@pytest.mark.parametrize("auth", ["off", "writes", "all"])
def test_forget_needs_the_token_under_every_auth_setting(auth):
    assert asyncio.run(status(auth, TOKEN)) == 401
    assert asyncio.run(status(auth, TOKEN, {"Authorization": f"Bearer {TOKEN}"})) == 200
    assert asyncio.run(status(auth, None)) == 401  # no token configured: closed, not open
