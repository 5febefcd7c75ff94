"""``paretopress run``: everything between a validated job file and a finished study."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from paretopress.errors import UserError
from paretopress.job import JobSpec
from paretopress.search.controller import Controller, Progress, build_space, build_strategy
from paretopress.search.data import load_documents
from paretopress.search.executor import Executor, LocalExecutor, RayExecutor, connect_ray
from paretopress.search.models import load_model
from paretopress.search.samples import prepare_pools
from paretopress.search.store import Store, check_writable
from paretopress.search.worker import SampleSet
from paretopress.spaces.base import Space
from paretopress.spaces.genome import Genome

DENSE = "dense"


@dataclass
class Outcome:
    """A finished study: the genomes confirmed on held-out data (by label) with their metrics."""

    study_id: int
    name: str
    resumed: bool
    genomes: dict[str, Genome]
    metrics: dict[str, dict[str, float]]
    evaluated: int
    reused: int

    @property
    def best(self) -> str:
        """Label of the compressed genome with the lowest held-out KL."""
        return min((label for label in self.metrics if label != DENSE), key=lambda label: self.metrics[label]["kl"])


def run_job(
    job: JobSpec,
    db_path: str | Path,
    *,
    address: str | None = None,
    executor: str = "ray",
    on_progress: Callable[[Progress], None] = lambda _: None,
    wrap_executor: Callable[[Executor], Executor] = lambda e: e,
) -> Outcome:
    """Validate everything the user gave before the store is touched, then search, then report on held-out data.

    ``wrap_executor`` lets tests interpose on the real executor (e.g. to interrupt a run part-way).
    """
    check_writable(Path(db_path))
    # Data first: its errors come fast, and in a job submitted to a Ray cluster `datasets` failed with
    # "[Errno 2] No such file or directory" when it loaded after ray.init (tests/test_cluster.py).
    documents = load_documents(job.data, heldout_fraction=job.evaluation.heldout_fraction)
    if executor == "ray":
        connect_ray(address)  # an unreachable cluster fails here, before minutes of model loading
    elif address:
        raise UserError("--address names a Ray cluster; it cannot be combined with --executor local")
    model = load_model(job.model)
    space = build_space(job, model)
    pools = prepare_pools(job, model, documents)
    del model
    store = Store(db_path)
    try:
        study_id, resumed = store.open_study(job.name, job.study_spec(), job.seed, space.describe())
        try:
            genomes, metrics, controller = _search(job, store, study_id, space, pools, executor,
                                                   on_progress, wrap_executor)
        except BaseException as error:
            store.set_status(study_id, "interrupted" if isinstance(error, KeyboardInterrupt) else "failed")
            raise
        store.set_status(study_id, "completed")
        return Outcome(study_id, job.name, resumed, genomes, metrics, controller.evaluated, controller.reused)
    finally:
        store.close()


def _search(job, store, study_id, space: Space, pools: dict[str, SampleSet], executor, on_progress,
            wrap_executor) -> tuple[dict[str, Genome], dict[str, dict[str, float]], Controller]:
    worker_args = dict(model=job.model, space=space, pools=pools, batch_size=job.run.batch_size)
    if executor == "ray":
        pool = RayExecutor(job.run.workers, job.run.threads_per_worker, **worker_args)
    else:
        pool = LocalExecutor(threads=job.run.threads_per_worker, **worker_args)
    try:
        controller = Controller(store, study_id, wrap_executor(pool), job.evaluation.seq_len, space,
                                job.front.reference_kl)
        strategy = build_strategy(job, space)
        controller.drive(strategy, on_progress, job.strategy.generations)
        genomes = {DENSE: space.dense(), **strategy.final()}
        metrics = controller.report(genomes, job.evaluation.heldout_samples)
    finally:
        pool.close()
    return genomes, metrics, controller
