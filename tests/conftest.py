"""Shared fixtures: real node processes on loopback, real LevelDB in temporary dirs."""

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from node.cli_util import free_port, node_command
from node.sdk.client import ApiError, Client

__all__ = ["ROOT", "NodeProcess", "free_port"]

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class NodeProcess:
    data_dir: Path
    port: int
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def client(self) -> Client:
        return Client(self.url, timeout=30)

    def start(self, timeout: float = 30.0) -> "NodeProcess":
        self.log_path = self.data_dir.parent / f"node-{self.port}-{int(time.time() * 1000)}.log"
        cmd = node_command(str(self.data_dir), self.port, *self.extra_args)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node exited with {self.proc.returncode}:\n{self.log()}")
            try:
                self.client.health()
                return self
            except (OSError, ApiError):
                time.sleep(0.05)
        raise TimeoutError(f"node did not come up:\n{self.log()}")

    def log(self) -> str:
        return (
            self.log_path.read_text(errors="replace")
            if self.log_path and self.log_path.exists()
            else ""
        )

    def kill(self) -> None:
        """SIGKILL: no cleanup, no flush; what a crash looks like."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def node_factory(tmp_path: Path) -> Iterator[type[NodeProcess]]:
    started: list[NodeProcess] = []

    class Factory(NodeProcess):
        def start(self, timeout: float = 30.0) -> "NodeProcess":
            started.append(self)
            return super().start(timeout)

    yield Factory
    for n in started:
        n.kill()


@pytest.fixture
def node(tmp_path: Path, node_factory: type[NodeProcess]) -> NodeProcess:
    """A running node with the dev genesis and a fast block time."""
    return node_factory(tmp_path / "data", free_port(), ["--block-time-ms", "50"]).start()
