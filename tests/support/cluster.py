"""A Ray cluster of three ``ray start`` nodes on this machine (head and two workers, token auth on), for the
multi-node tests and benchmarks/faults.py."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

BIN = Path(sys.executable).parent
NODE_START_TIMEOUT = 300  # seconds per node; a 2-core machine busy with other work once needed more than 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """Each node is a `ray start --block` in its own session: stopping or killing it ends exactly its processes,
    never the other Ray instances on this machine (as `ray stop` would).

    The nodes keep their files in a temporary directory of their own, so a `ray.init()` elsewhere on this machine
    never finds this cluster; they need the token, and so does every client.
    """

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder, self.nodes = folder, {}
        self.temp = Path(tempfile.mkdtemp(prefix="pp-ray-"))  # short: Ray's socket paths live below it
        self.token = secrets.token_hex(16)
        self.env = {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token,
                    "RAY_health_check_period_ms": "1000"}  # a dead node is noticed in ~5 s instead of ~15 s
        # Set to 0 by a private instance this process started (connect_ray keeps it on loopback that way), this
        # variable makes worker nodes refuse to join any cluster.
        self.env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
        self.port, self.dashboard = free_port(), free_port()
        try:
            self.start("head", "--head", "--port", str(self.port), "--dashboard-host", "127.0.0.1",
                       "--dashboard-port", str(self.dashboard), "--ray-client-server-port", str(free_port()))
            for i in (1, 2):  # one at a time: on 2 cores, nodes starting together time out
                self.start(f"worker{i}", "--address", f"127.0.0.1:{self.port}")
        except BaseException:
            self.stop()
            raise

    def start(self, name: str, *args: str) -> None:
        """Start a node of one CPU and a small object store, and wait until the head counts it alive."""
        log = open(self.folder / f"{name}.log", "w")  # noqa: SIM115 - lives as long as the node
        self.nodes[name] = subprocess.Popen(
            [str(BIN / "ray"), "start", "--block", "--num-cpus", "1", "--object-store-memory", str(80 * 2**20),
             "--node-ip-address", "127.0.0.1", "--temp-dir", str(self.temp), "--disable-usage-stats",
             "--dashboard-agent-listen-port", str(free_port()), *args],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.folder)
        self.wait_for_nodes(len(self.nodes))

    def alive_nodes(self) -> int | None:
        """Nodes the head's dashboard counts alive; None while the dashboard is not answering yet."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.dashboard}/nodes?view=summary",
                                         headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                summary = json.load(response)["data"]["summary"]
        except (OSError, ValueError, KeyError):  # not listening yet, or answering before it is ready
            return None
        return sum(node.get("raylet", {}).get("state") == "ALIVE" for node in summary)

    def wait_for_nodes(self, count: int) -> None:
        deadline = time.monotonic() + NODE_START_TIMEOUT
        while self.alive_nodes() != count:
            crashed = [name for name, node in self.nodes.items() if node.poll() is not None]
            if crashed or time.monotonic() > deadline:
                raise RuntimeError(f"{count} Ray nodes did not come up (exited: {crashed}); see {self.folder}/*.log")
            time.sleep(1)

    def runs_an_evaluator(self, name: str) -> bool:
        """Whether an evaluator actor lives on the node: Ray titles an actor's process `ray::Worker...`."""
        try:
            processes = psutil.Process(self.nodes[name].pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return False
        return any(_title(process).startswith("ray::Worker") for process in processes)

    def kill(self, name: str) -> None:
        """SIGKILL every process of one node at once: a machine that lost power."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.nodes[name].pid, signal.SIGKILL)
        self.nodes[name].wait()

    def stop(self) -> None:
        """SIGTERM every node, 10 s to finish, then SIGKILL whatever is left of their process groups."""
        for node in self.nodes.values():
            with contextlib.suppress(ProcessLookupError):  # a node may already be gone
                os.killpg(node.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for node in self.nodes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.wait(timeout=max(deadline - time.monotonic(), 0.1))
            with contextlib.suppress(ProcessLookupError):  # the group outlives its leader while a member runs
                os.killpg(node.pid, signal.SIGKILL)
            node.wait()
        shutil.rmtree(self.temp, ignore_errors=True)


def _title(process: psutil.Process) -> str:
    try:
        return process.name()
    except psutil.NoSuchProcess:  # ended since it was listed
        return ""
