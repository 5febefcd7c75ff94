"""``paretopress run``: everything between a validated job file and a finished study."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from paretopress.errors import UserError
from paretopress.job import EvoPressSpec, JobSpec
from paretopress.search.baselines.runs import run_baselines
from paretopress.search.controller import Controller, Progress, build_space, build_strategy
from paretopress.search.data import load_documents
from paretopress.search.executor import Executor, LocalExecutor, RayExecutor, connect_ray
from paretopress.search.latency import timed_space
from paretopress.search.models import load_model
from paretopress.search.samples import prepare_pools
from paretopress.search.store import Store, check_schema, check_writable
from paretopress.search.strategy import CALIBRATION
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
    costs: dict[str, dict[str, float]]  # the space's exact costs of each genome (params, sparsity, bits, ...)
    evaluated: int
    reused: int
    baselines: frozenset[str] = frozenset()  # labels of the baselines' genomes

    @property
    def best(self) -> str:
        """Label of the searched genome with the lowest held-out KL (of a baseline's when nothing was searched)."""
        compressed = [label for label in self.metrics if label != DENSE]
        searched = [label for label in compressed if label not in self.baselines] or compressed
        return min(searched, key=lambda label: self.metrics[label]["kl"])


def run_job(
    job: JobSpec,
    db_path: str | Path,
    *,
    address: str | None = None,
    executor: str = "ray",
    on_progress: Callable[[Progress], None] = lambda _: None,
    wrap_executor: Callable[[Executor], Executor] = lambda e: e,
    search: bool = True,
) -> Outcome:
    """Validate everything the user gave before the store is touched, run the job's baselines, search (unless
    ``search`` is false: baselines only), then report every genome on held-out data.

    ``wrap_executor`` lets tests interpose on the real executor (e.g. to interrupt a run part-way).
    """
    db_path = Path(db_path)
    check_writable(db_path)
    if db_path.exists() and db_path.stat().st_size > 0:
        check_schema(db_path)  # a store this paretopress cannot open is refused before minutes of work
    # Data first: its errors come fast, and in a job submitted to a Ray cluster `datasets` failed with
    # "[Errno 2] No such file or directory" when it loaded after ray.init (tests/test_cluster.py).
    documents = load_documents(job.data, heldout_fraction=job.evaluation.heldout_fraction)
    if executor == "ray":
        connect_ray(address)  # an unreachable cluster fails here, before minutes of model loading
    elif address:
        raise UserError("--address names a Ray cluster; it cannot be combined with --executor local")
    model = load_model(job.model)
    space = timed_space(job, model, build_space(job, model), db_path)  # speedup targets: the store's latency table
    pools = prepare_pools(job, model, documents)
    store = Store(db_path)
    try:
        study_id, resumed = store.open_study(job.name, job.study_spec(), job.seed, space.describe())
        try:
            baselines = run_baselines(job, store, study_id, space, model, pools[CALIBRATION].tokens)
            del model  # the workers load their own copy
            genomes, metrics, controller = _search(job, store, study_id, space, pools, baselines, search,
                                                   executor, on_progress, wrap_executor)
        except BaseException as error:
            store.set_status(study_id, "interrupted" if isinstance(error, KeyboardInterrupt) else "failed")
            raise
        store.set_status(study_id, "completed")
        costs = {label: space.cost(genome) for label, genome in genomes.items()}
        labels = frozenset(label for run in baselines.values() for label in run)
        return Outcome(study_id, job.name, resumed, genomes, metrics, costs, controller.evaluated, controller.reused,
                       labels)
    finally:
        store.close()


def _search(job, store, study_id, space: Space, pools: dict[str, SampleSet], baselines: dict[str, dict[str, Genome]],
            search: bool, executor, on_progress, wrap_executor
            ) -> tuple[dict[str, Genome], dict[str, dict[str, float]], Controller]:
    worker_args = dict(model=job.model, space=space, pools=pools, batch_size=job.run.batch_size)
    if executor == "ray":
        pool = RayExecutor(job.run.workers, job.run.threads_per_worker, **worker_args)
    else:
        pool = LocalExecutor(threads=job.run.threads_per_worker, **worker_args)
    try:
        controller = Controller(store, study_id, wrap_executor(pool), job.evaluation.seq_len, space,
                                job.front.reference_kl)
        genomes = {DENSE: space.dense(), **{label: g for run in baselines.values() for label, g in run.items()}}
        if search:
            warm = job.strategy.warm_start if isinstance(job.strategy, EvoPressSpec) else None
            strategy = build_strategy(job, space, list(baselines[warm].values()) if warm else None)
            controller.drive(strategy, on_progress, job.strategy.generations)
            genomes.update(strategy.final())
        metrics = controller.report(genomes, job.evaluation.heldout_samples)
    finally:
        pool.close()
    return genomes, metrics, controller
