"""Start, wait for and stop `bentoml serve` (and other servers) as process groups on loopback —
the one launcher the demo, the benches and the tests use."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from seqops.config import project_paths
from seqops.io import tool_env

SERVICE = "seqops.serving.service:Recommender"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_command(port: int, service: str = SERVICE, host: str = "127.0.0.1") -> list[str]:
    return [str(Path(sys.executable).parent / "bentoml"), "serve", service, "--host", host, "--port", str(port)]


def start_group(cmd: list[str], env: dict, cwd: Path, log_path: Path) -> subprocess.Popen:
    """Run `cmd` in its own process group (so stopping it stops its workers), output to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop_group(proc: subprocess.Popen, timeout_s: float = 20) -> None:
    """SIGTERM the process group, SIGKILL it and every descendant if it does not exit in time
    (BentoML's workers run in sessions of their own: killing the group alone would leave them
    holding the port and their landing files)."""
    import psutil

    if proc.poll() is not None:
        return
    try:
        descendants = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    _, alive = psutil.wait_procs(descendants, timeout=5)  # workers finish their own shutdown first
    for child in alive:  # whatever outlived its parent
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass


def wait_until_ok(url: str, proc: subprocess.Popen, log_path: Path, timeout_s: float = 180) -> None:
    """Poll `url` until it answers 200; fail early with the log's tail when the process exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{' '.join(proc.args[:2])} exited with {proc.returncode}; "
                f"see {log_path}:\n{log_path.read_text()[-3000:]}"
            )
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} not ready after {timeout_s:.0f}s; see {log_path}")


class Service:
    """`bentoml serve` for a project on a loopback port; `with Service(project) as s: s.url`."""

    def __init__(
        self,
        project: Path,
        *,
        port: int | None = None,
        service: str = SERVICE,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
    ):
        paths = project_paths(project)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path or paths.logs / "bentoml-serve.log"
        full_env = {
            **tool_env(),
            "SEQOPS_PROJECT": str(paths.project),
            "BENTOML_HOME": str(paths.bentoml_home),
            **(env or {}),
        }
        self.proc = start_group(serve_command(self.port, service), full_env, paths.project, self.log_path)

    def wait_ready(self, timeout_s: float = 180) -> None:
        wait_until_ok(f"{self.url}/readyz", self.proc, self.log_path, timeout_s)

    def cpu_seconds(self) -> float:
        """User + system CPU of the server and all its processes so far."""
        import psutil

        try:
            root = psutil.Process(self.proc.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0.0
        total = 0.0
        for proc in procs:
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return total

    def stop(self) -> None:
        stop_group(self.proc)

    def __enter__(self) -> "Service":
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@contextmanager
def running_service(project: Path, port: int | None = None, timeout_s: float = 180) -> Iterator[str]:
    """Start the project's service, yield its base URL once ready, stop it afterwards."""
    service = Service(project, port=port)
    try:
        service.wait_ready(timeout_s)
        yield service.url
    finally:
        service.stop()


__all__ = [
    "SERVICE",
    "Service",
    "free_port",
    "running_service",
    "serve_command",
    "start_group",
    "stop_group",
    "wait_until_ok",
]
