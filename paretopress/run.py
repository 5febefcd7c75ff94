"""``paretopress run``: the one place that wires a validated job to its inputs, space, store and search."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import psutil
from torch import nn

from paretopress.cluster import connect_ray
from paretopress.devices import controller_device, release_device_memory, resolve_device
from paretopress.evaluators.forward import head_problem
from paretopress.evaluators.samples import CALIBRATION, CONFIRMATION, SampleSet
from paretopress.inputs.data import Documents, load_documents
from paretopress.inputs.levels import attach_database
from paretopress.inputs.models import load_model
from paretopress.inputs.pools import prepare_pools
from paretopress.job import JobSpec
from paretopress.kernel.errors import UserError
from paretopress.profile import space_times
from paretopress.search.baselines.runs import run_baselines
from paretopress.search.controller import Controller, Progress
from paretopress.search.executor import Executor, LocalExecutor, RayExecutor
from paretopress.search.strategies import SearchSetting
from paretopress.search.strategies.base import SearchReport
from paretopress.spaces.base import Space
from paretopress.spaces.budget import TimeTable
from paretopress.spaces.database import LevelSource
from paretopress.spaces.genome import Genome
from paretopress.spaces.specs.width import LatencySpec
from paretopress.spaces.width import WidthSpace
from paretopress.store.files import check_writable, store_path
from paretopress.store.lease import Heartbeat
from paretopress.store.store import Store, check_schema

DENSE = "dense"
LOGIT_COPIES = 3  # a batch's logits, their log-softmax and one temporary live at once in a worker's forward
Metrics = dict[str, dict[str, float]]  # label -> evaluator -> value


class JobInputs:
    """What a job's space is built from (``spaces.specs.Inputs``): the dense model, the job's documents and
    calibration settings for level databases, and the store for latency tables (when it is open)."""

    def __init__(self, job: JobSpec, model: nn.Module, documents: Documents | None = None,
                 store: Store | None = None) -> None:
        self.job, self.model, self._documents, self.store = job, model, documents, store

    @property
    def documents(self) -> Documents:
        """The job's documents, loaded on first use when not given."""
        if self._documents is None:
            self._documents = load_documents(self.job.data, heldout_fraction=self.job.evaluation.heldout_fraction)
        return self._documents

    def attach_levels(self, source: LevelSource, samples: int) -> None:
        attach_database(source, self.model, self.job.model, self.documents, samples, self.job.evaluation.seq_len,
                        self.job.run.batch_size)

    def time_table(self, space: WidthSpace, latency: LatencySpec) -> TimeTable:
        if self.store is None:
            raise RuntimeError("latency tables live in the store; open it first")
        return space_times(self.store, self.model, self.job.model, space, latency)


def build_space(job: JobSpec, model: nn.Module, documents: Documents | None = None) -> Space:
    """The job's space with its level databases, without what its budget needs from the store (export's view)."""
    return job.space.build(JobInputs(job, model, documents))


@dataclass
class Outcome:
    """A finished study: the genomes confirmed on held-out data (by label) with their metrics and candidate ids."""

    study_id: int
    name: str
    resumed: bool
    genomes: dict[str, Genome]
    metrics: Metrics
    confirmed: Metrics  # the same genomes on evaluation.heldout_data's text (empty without it)
    costs: dict[str, dict[str, float]]  # the space's exact costs of each genome (params, sparsity, bits, ...)
    candidates: dict[str, int]  # label -> the genome's candidate id in the store
    evaluated: int
    reused: int
    baselines: frozenset[str] = frozenset()  # labels of the baselines' genomes
    reports: dict[str, SearchReport] = field(default_factory=dict)  # what the search measured, by budget label

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
    takeover: bool = False,
) -> Outcome:
    """Validate everything the user gave before the store is touched, run the job's baselines, search (unless
    ``search`` is false: baselines only), then report every genome on held-out data.

    ``wrap_executor`` lets tests interpose on the real executor (e.g. to interrupt a run part-way); ``takeover``
    takes the study's lease from another run (one that died on another machine).
    """
    db_path = store_path(db_path)
    check_writable(db_path)
    if db_path.exists() and db_path.stat().st_size > 0:
        check_schema(db_path)  # a store this paretopress cannot open is refused before minutes of work
    # Data first: its errors come fast, and in a job submitted to a Ray cluster `datasets` failed with
    # "[Errno 2] No such file or directory" when it loaded after ray.init (tests/test_cluster.py).
    documents = load_documents(job.data, heldout_fraction=job.evaluation.heldout_fraction)
    confirmation = confirmation_documents(job)
    if executor == "ray":
        connect_ray(address)  # an unreachable cluster fails here, before minutes of model loading
    elif address:
        raise UserError("--address names a Ray cluster; it cannot be combined with --executor local")
    device = resolve_device(job.run.device, executor)
    job = job.on_device(device)  # dtype auto: half precision on a GPU
    model = load_model(job.model)
    check_fits(job, model.config)
    if job.evaluation.tail_samples is not None and (problem := head_problem(model)):
        raise UserError(f"evaluation.tail_samples: {job.model} cannot be estimated that way: {problem}")
    model.to(controller_device(device))  # the teacher's outputs, the level databases and the baselines
    space = build_space(job, model, documents)
    pools = prepare_pools(model, job.model, documents, job.evaluation, job.run.batch_size, confirmation)
    with Store(db_path) as store:
        space = job.space.budgeted(space, JobInputs(job, model, documents, store))  # speedups: the latency table
        study_id, resumed = store.open_study(job.name, job.study_spec(), job.seed, space.describe(), takeover)
        with Heartbeat(store.engine, study_id):  # the lease: a second run of this study is refused
            try:
                baselines = run_baselines(job.all_baselines, job.space.budget_spaces(space), store, study_id, model,
                                          pools[CALIBRATION].tokens, job.run.batch_size)
                del model  # the workers load their own copy
                release_device_memory()
                genomes, metrics, confirmed, controller, reports = _search(
                    job, store, study_id, space, pools, baselines, search, executor, device, on_progress,
                    wrap_executor)
            except BaseException as error:
                store.set_status(study_id, "interrupted" if isinstance(error, KeyboardInterrupt) else "failed")
                raise
            store.set_status(study_id, "completed")
        return Outcome(study_id, job.name, resumed, genomes, metrics, confirmed,
                       costs={label: space.cost(genome) for label, genome in genomes.items()},
                       candidates={label: store.candidate_id(study_id, genome) for label, genome in genomes.items()},
                       evaluated=controller.evaluated, reused=controller.reused,
                       baselines=frozenset(label for run in baselines.values() for label in run), reports=reports)


def confirmation_documents(job: JobSpec) -> Documents | None:
    """The text that confirms final genomes (``evaluation.heldout_data``), split as ``data`` is; None without it."""
    other = job.evaluation.heldout_data
    return None if other is None else load_documents(other, job.evaluation.heldout_fraction)


def check_fits(job: JobSpec, config) -> None:
    """What the job asks of the model that only its config can say, checked before anything is written (the memory
    of a batch's logits against this machine's: workers elsewhere in a cluster have their own, but a job's teacher
    and baselines run here)."""
    vocabulary = config.vocab_size
    if job.evaluation.top_k > vocabulary:
        raise UserError(f"evaluation.top_k: {job.evaluation.top_k} is more than {job.model}'s {vocabulary:,} tokens")
    positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    for name, length in (("seq_len", job.evaluation.seq_len), ("heldout_seq_len", job.evaluation.heldout_seq_len)):
        if positions is not None and length is not None and length > positions:
            raise UserError(f"evaluation.{name}: {length} is more than the {positions:,} positions {job.model} has")
    logits = job.run.batch_size * max(job.evaluation.seq_len, job.evaluation.heldout_seq_len or 0) * vocabulary
    needed, free = LOGIT_COPIES * 4 * logits * job.run.workers, psutil.virtual_memory().available
    if needed > free:  # the batch's float32 logits alone: the rest of a forward only adds to it
        raise UserError(f"run.batch_size: {job.run.workers} workers x {job.run.batch_size} samples of "
                        f"{job.evaluation.seq_len} tokens x {vocabulary:,} logits need about {needed / 2**30:.1f} GiB "
                        f"at once, and this machine has {free / 2**30:.1f} GiB free; lower run.batch_size")


def _search(job: JobSpec, store: Store, study_id: int, space: Space, pools: dict[str, SampleSet],
            baselines: dict[str, dict[str, Genome]], search: bool, executor: str, device: str,
            on_progress: Callable[[Progress], None], wrap_executor: Callable[[Executor], Executor]
            ) -> tuple[dict[str, Genome], Metrics, Metrics, Controller, dict[str, SearchReport]]:
    worker_args = dict(load=partial(load_model, job.model), space=space, pools=pools, batch_size=job.run.batch_size,
                       tail_samples=job.evaluation.tail_samples, dtype=job.evaluation.dtype, device=device)
    if executor == "ray":
        gpus = job.run.gpus_per_worker if device == "cuda" else 0
        pool = RayExecutor(job.run.workers, job.run.threads_per_worker, gpus, **worker_args)
    else:
        pool = LocalExecutor(threads=job.run.threads_per_worker, **worker_args)
    try:
        seq_lens = {name: samples.tokens.shape[1] for name, samples in pools.items()}
        controller = Controller(store, study_id, wrap_executor(pool), seq_lens, space, job.front.reference_kl,
                                job.front.cost)
        genomes = {DENSE: space.dense(), **{label: g for run in baselines.values() for label, g in run.items()}}
        reports = {}
        if search:
            setting = SearchSetting(job.seed, job.evaluation.seq_len, job.evaluation.calibration_samples)
            by_baseline = [list(baselines[start.method].values()) for start in job.start_baselines]
            starts = [list(per_budget) for per_budget in zip(*by_baseline, strict=True)] if by_baseline else None
            strategy = job.strategy.build(space, job.space, setting, starts)
            controller.drive(strategy, on_progress, job.strategy.generations)
            genomes.update(strategy.final())
            reports = strategy.report()
        metrics = controller.report(genomes, job.evaluation.heldout_samples)
        confirmed = {} if CONFIRMATION not in pools else controller.report(genomes, job.evaluation.heldout_samples,
                                                                           CONFIRMATION)
    finally:
        pool.close()
    return genomes, metrics, confirmed, controller, reports
