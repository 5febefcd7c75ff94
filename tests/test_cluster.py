"""A real multi-node Ray cluster on loopback: a head and two worker nodes as separate `ray start` processes.

Studies run across the nodes through `--address`, and through the job server with `paretopress submit`.
"""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from paretopress.search.store import Store
from tests.test_cli import job_yaml, write

# Three Ray nodes on a 2-core machine start reliably only when the machine is otherwise idle; opt in with
# PARETOPRESS_CLUSTER_TESTS=1 (CI does not yet: see the closing note of issue 6).
pytestmark = pytest.mark.skipif(not os.environ.get("PARETOPRESS_CLUSTER_TESTS"),
                                reason="multi-node tests: set PARETOPRESS_CLUSTER_TESTS=1")

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """Each node is a `ray start --block` in its own session: stopping it kills exactly its processes, never the
    other Ray instances on this machine (as `ray stop` would)."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder, self.env, self.nodes = folder, env, []
        self.port, self.dashboard = free_port(), free_port()
        self.start("head", "--head", "--port", str(self.port), "--dashboard-host", "127.0.0.1",
                   "--dashboard-port", str(self.dashboard), "--ray-client-server-port", str(free_port()))
        self.wait_for_nodes(1)
        for i in (1, 2):  # one at a time: on 2 cores, nodes starting together time out
            self.start(f"worker{i}", "--address", f"127.0.0.1:{self.port}")
            self.wait_for_nodes(1 + i)

    def start(self, name: str, *args: str) -> None:
        log = open(self.folder / f"{name}.log", "w")  # noqa: SIM115 - lives as long as the node
        self.nodes.append(subprocess.Popen(
            [str(BIN / "ray"), "start", "--block", "--num-cpus", "1", "--disable-usage-stats",
             "--dashboard-agent-listen-port", str(free_port()), *args],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.folder))

    def wait_for_nodes(self, count: int, timeout: float = 120) -> None:
        script = (f"import ray; ray.init(address='127.0.0.1:{self.port}', logging_level='ERROR'); "
                  "print(sum(n['Alive'] for n in ray.nodes()))")
        deadline = time.time() + timeout
        while time.time() < deadline:
            out = subprocess.run([sys.executable, "-c", script], env=self.env, capture_output=True, text=True,
                                 cwd=self.folder)
            if out.stdout.strip() == str(count):
                return
            time.sleep(1)
        raise TimeoutError(f"{count} Ray nodes did not come up; see {self.folder}/*.log")

    def stop(self) -> None:
        for node in reversed(self.nodes):
            with contextlib.suppress(ProcessLookupError):  # a node may already be gone
                os.killpg(node.pid, signal.SIGTERM)
        for node in self.nodes:
            try:
                node.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(node.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cluster")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PATH": f"{BIN}:{os.environ['PATH']}",
           "PARETOPRESS_CACHE": str(tmp_path_factory.getbasetemp() / "cache")}
    env.pop("RAY_ADDRESS", None)
    running = Cluster(folder, env)
    yield running
    running.stop()


def cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "paretopress.cli", *args], env=env, capture_output=True, text=True,
                          cwd=cwd)


def nodes_that_evaluated(db: Path) -> set[str]:
    with Store(db, readonly=True) as store:
        return {e.worker.rpartition("@")[2] for e in store.evaluations(store.study("tiny").id)}


def test_study_across_nodes(cluster, tiny_model, text_files, tmp_path):
    job, db = write(tmp_path / "job.yaml", job_yaml(tiny_model, text_files)), tmp_path / "s.db"
    result = cli("run", str(job), "--db", str(db), "--address", f"127.0.0.1:{cluster.port}", env=cluster.env,
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(nodes_that_evaluated(db)) == 2  # two actors of one CPU each: two different nodes


def test_submit_jobs_and_logs(cluster, tiny_model, text_files, tmp_path):
    folder = tmp_path / "job"
    (folder / "data").mkdir(parents=True)
    for file in text_files:  # the job's folder travels to the cluster: data next to the job file, named relatively
        shutil.copy(file, folder / "data")
    job = job_yaml(tiny_model, text_files)
    job["data"]["data_files"] = [f"data/{file.name}" for file in text_files]
    write(folder / "job.yaml", job)
    db, address = tmp_path / "cluster.db", f"http://127.0.0.1:{cluster.dashboard}"
    submitted = cli("submit", str(folder / "job.yaml"), "--address", address, "--db", str(db), env=cluster.env,
                    cwd=tmp_path)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.split()[1].rstrip(";")
    deadline = time.time() + 240
    while time.time() < deadline:
        listed = cli("jobs", "--address", address, env=cluster.env, cwd=tmp_path).stdout
        status = next(line.split()[1] for line in listed.splitlines() if line.split()[0] == job_id)
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            break
        time.sleep(2)
    logs = cli("logs", job_id, "--address", address, env=cluster.env, cwd=tmp_path).stdout
    assert status == "SUCCEEDED", logs
    assert "held-out perplexity" in logs
    with Store(db, readonly=True) as store:
        assert store.study("tiny").status == "completed"
    assert json.loads(cli("front", "tiny", "--db", str(db), "--json", env=cluster.env, cwd=tmp_path).stdout)


def test_bad_submissions_fail_fast_with_one_line(cluster, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("space: {drop: 2}\n")
    for args, message in (
        (("submit", str(bad), "--address", f"http://127.0.0.1:{cluster.dashboard}"), "model"),
        (("logs", "no-such-job", "--address", f"http://127.0.0.1:{cluster.dashboard}"), "no job 'no-such-job'"),
        (("jobs", "--address", "http://127.0.0.1:1"), "cannot reach the Ray job server"),
    ):
        result = cli(*args, env=cluster.env, cwd=tmp_path)
        assert result.returncode == 2 and message in result.stderr and result.stderr.count("\n") == 1, result.stderr
