"""A real Prefect server: deploy the flows with `seqops serve-flows`, trigger `retrain` through the
API, and see it complete with its gate-decision artifact."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from seqops.io import tool_env
from seqops.serving.launch import free_port, start_group, stop_group, wait_until_ok

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
BIN = Path(sys.executable).parent

TRIGGER = """
import asyncio, json, sys
import httpx
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL

async def main(project):
    async with get_client() as client:
        for _ in range(120):
            try:
                await client.read_deployment_by_name("retrain/retrain")
                break
            except Exception:
                await asyncio.sleep(1)
    run = await run_deployment("retrain/retrain", parameters={"project": project, "batch": 0}, timeout=700)
    # the REST filter with only the artifact clause: an empty task-run clause would join task runs
    # and hide the flow-level artifacts (and the client sends nulls this server rejects)
    body = {"artifacts": {"flow_run_id": {"any_": [str(run.id)]}}, "limit": 50}
    found = httpx.post(f"{PREFECT_API_URL.value()}/artifacts/filter", json=body, timeout=30).raise_for_status().json()
    keys = sorted({a["key"] for a in found if a["key"]})
    print(json.dumps({"state": run.state.type.value, "artifacts": keys}))

asyncio.run(main(sys.argv[1]))
"""


def test_deployed_retrain_runs_on_a_real_prefect_server(project, tmp_path):
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **tool_env(),
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
    }
    (tmp_path / "prefect-home").mkdir()
    server = start_group(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env,
        tmp_path,
        tmp_path / "server.log",
    )
    worker = None
    try:
        wait_until_ok(f"{api}/health", server, tmp_path / "server.log", timeout_s=120)
        worker = start_group(
            [str(BIN / "seqops"), "serve-flows", "--no-schedules", "--project", str(project)],
            env,
            project,
            tmp_path / "worker.log",
        )
        done = subprocess.run(
            [sys.executable, "-c", TRIGGER, str(project)], env=env, capture_output=True, text=True, timeout=800
        )
        assert done.returncode == 0, done.stderr[-3000:] + (tmp_path / "worker.log").read_text()[-3000:]
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert result["state"] == "COMPLETED", (tmp_path / "worker.log").read_text()[-5000:]
        assert "gate-decision" in result["artifacts"]
    finally:
        for proc in (worker, server):
            if proc is not None:
                stop_group(proc, timeout_s=30)
