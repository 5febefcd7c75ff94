"""What each CLI command does, once its arguments parsed; one function per command, named like it."""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from typing import TYPE_CHECKING, TextIO

from paretopress.api import open_store, plot_front
from paretopress.job import load_job
from paretopress.kernel.errors import UserError
from paretopress.report.front import front_cost, study_front
from paretopress.report.plots import renderer
from paretopress.report.tokens import baseline_tokens, study_tokens
from paretopress.spaces.specs import budget_text
from paretopress.store.store import Store

if TYPE_CHECKING:
    from paretopress.run import Outcome
    from paretopress.search.controller import Progress


class ProgressLine:
    """One status line per batch: rewritten in place on a terminal, printed per generation otherwise."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr  # looked up now: sys.stderr may be replaced after import (tests do)
        self.tty = self.stream.isatty()
        self.last_generation = -1

    def __call__(self, p: Progress) -> None:
        rate = p.evaluated / p.elapsed if p.elapsed > 0 else 0.0
        done = p.generation / p.generations
        eta = p.elapsed / done - p.elapsed if done > 0 and p.evaluated else float("nan")
        best = f"{p.best_fitness:.4f}" if p.best_fitness is not None else "-"
        hypervolume = f"{p.hypervolume:.4f}" if p.hypervolume is not None else "-"
        line = (f"generation {p.generation}/{p.generations}  best {p.fitness} {best}  hypervolume {hypervolume}  "
                f"{rate:.2f} evals/s  ({p.evaluated} run, {p.reused} from store)  ETA {_duration(eta)}")
        if self.tty:
            print(f"\r{line}\033[K", end="", file=self.stream, flush=True)
        elif p.generation != self.last_generation:
            print(line, file=self.stream, flush=True)
        self.last_generation = p.generation

    def close(self) -> None:
        if self.tty:
            print(file=self.stream)


def _duration(seconds: float) -> str:
    if seconds != seconds:  # NaN: not known yet
        return "?"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s"


def run(args: argparse.Namespace) -> int:
    from paretopress.inputs.models import quiet_transformers  # torch, transformers, ray: only where a model runs
    from paretopress.run import DENSE, run_job

    quiet_transformers()
    job = load_job(args.job)
    start = time.perf_counter()
    progress = ProgressLine()
    try:
        outcome = run_job(job, args.db, address=args.address, executor=args.executor, on_progress=progress,
                         takeover=args.takeover)
    finally:
        progress.close()
    dense, found, best_id = outcome.metrics[DENSE], outcome.metrics[outcome.best], outcome.candidates[outcome.best]
    verb = "resumed" if outcome.resumed else "ran"
    print(f"{verb} study {outcome.name!r} in {time.perf_counter() - start:.0f} s: {outcome.evaluated} evaluations run, "
          f"{outcome.reused} answered from the store")
    _outcome_table(outcome, args.db)
    for label, report in outcome.reports.items():
        for line in report.lines():
            print(f"{line} ({label})" if label else line)
    print(f"held-out perplexity: dense {dense['ppl']:.3f} ({int(dense['params']):,} params), "
          f"found {found['ppl']:.3f} ({int(found['params']):,} params, KL {found['kl']:.4f}), candidate {best_id}")
    print(f"store: {args.db}   front: paretopress front {outcome.name} --db {args.db}")
    print(f"export: paretopress export {outcome.name} --candidate {best_id} --db {args.db} --out OUT_DIR")
    return 0


def baseline(args: argparse.Namespace) -> int:
    """The job's baselines alone: their genomes land in the job's study, so a later `run` reuses them."""
    from paretopress.inputs.models import quiet_transformers
    from paretopress.run import run_job

    quiet_transformers()
    job = load_job(args.job)
    if not job.all_baselines:
        raise UserError(f"job file {args.job} names no baselines; add e.g. `baselines: [{{method: shortgpt}}]`")
    outcome = run_job(job, args.db, address=args.address, executor=args.executor, search=False,
                     takeover=args.takeover)
    _outcome_table(outcome, args.db)
    print(f"store: {args.db}   front: paretopress front {outcome.name} --db {args.db}")
    return 0


def _outcome_table(outcome: Outcome, db: str) -> None:
    """Every genome the study confirmed on held-out data, dense and baselines included, with what each cost: a
    baseline its own passes, a searched genome the search's calibration tokens (screening included)."""
    from paretopress.run import DENSE

    with Store(db, readonly=True) as store:
        study = store.study(outcome.study_id)
        runs = {run.label: run for run in store.baseline_runs(study.id)}
        tokens = study_tokens(store, study)
    seq_len, sizes = study.spec["evaluation"]["seq_len"], _sizes(study.spec)
    rows = []
    for label, values in outcome.metrics.items():
        run = runs.get(label)
        if run is not None:
            cost = (f"{baseline_tokens(run, seq_len):,}", f"{run.seconds:.1f}", run.passes)
        else:
            cost = ("" if label == DENSE or label in outcome.baselines else f"{tokens.search:,}", "", "")
        other = outcome.confirmed.get(label)
        confirmed = () if other is None else (f"{other['kl']:.4f}", f"{other['ppl']:.3f}")
        rows.append((label, *(f"{int(values[size]):,}" for size in sizes), f"{values['kl']:.4f}",
                     f"{values['ppl']:.3f}", *confirmed, *cost))
    extra = ("heldout_data kl", "heldout_data ppl") if outcome.confirmed else ()
    _table(("genome", *sizes, "held-out kl", "held-out ppl", *extra, "tokens", "seconds", "passes"), rows)
    print(f"study {study.name!r}: {tokens}")


def studies(args: argparse.Namespace) -> int:
    with Store(args.db, readonly=True) as store:
        rows = [(s.id, s.name, s.status, s.spec["model"], _space(s.spec["space"]), len(store.candidates(s.id)),
                 f"{study_tokens(store, s).total:,}") for s in store.studies()]
    _table(("id", "name", "status", "model", "space", "candidates", "tokens"), rows)
    return 0


def _space(spec: dict) -> str:
    kind = spec.get("kind", "depth")
    if "granularity" in spec:
        kind += f"/{spec['granularity']}"
    return f"{kind} {budget_text(spec)}"


def front(args: argparse.Namespace) -> int:
    with Store(args.db, readonly=True) as store:
        study = store.study(args.study)
        rows = study_front(store, study.id)
        tokens = study_tokens(store, study)
    sizes = _sizes(study.spec)
    if args.csv:
        fields = list(dict.fromkeys(key for row in rows for key in row)) or ["candidate", "origin", "generation"]
        writer = csv.DictWriter(sys.stdout, fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return 0
    if args.json:
        print(json.dumps([{k: _json_number(v) for k, v in row.items()} for row in rows]))
        return 0
    _table(
        ("candidate", "origin", "generation", *sizes, "kl", "ppl"),
        [(r["candidate"], r["origin"], "" if r["generation"] is None else r["generation"],
          *(f"{int(r[size]):,}" for size in sizes), f"{r['kl']:.4f}", f"{r.get('ppl', float('nan')):.3f}")
         for r in rows],
    )
    print(f"study {study.name!r}: {tokens}")
    return 0


def _sizes(spec: dict) -> tuple[str, ...]:
    """The size columns of a study's tables: parameters, and bytes where its front is ranked by them."""
    return tuple(dict.fromkeys(("params", front_cost(spec))))


def _json_number(value):
    """JSON has no NaN or infinity (a broken candidate's perplexity can overflow): those become null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def plot(args: argparse.Namespace) -> int:
    renderer(args.output)  # a wrong suffix fails before the store is read
    with open_store(args.db) as view:
        frames = {view.store.study(ref).name: view.candidates(ref) for ref in args.studies}
    print(f"wrote {plot_front(frames, args.output)}")
    return 0


def submit(args: argparse.Namespace) -> int:
    from paretopress import cluster

    job_id = cluster.submit(args.job, args.address, args.db)
    where = f" --address {args.address}" if args.address else ""
    print(f"submitted {job_id}; follow it with: paretopress logs {job_id}{where}")
    return 0


def jobs(args: argparse.Namespace) -> int:
    from paretopress import cluster

    _table(("job", "status", "entrypoint"), cluster.jobs(args.address))
    return 0


def logs(args: argparse.Namespace) -> int:
    from paretopress import cluster

    print(cluster.logs(args.address, args.job_id), end="")
    return 0


def doctor(args: argparse.Namespace) -> int:
    """Exit 0 when the store is sound, 1 when it has problems (listed one per line)."""
    from paretopress.store.doctor import diagnose

    diagnosis = diagnose(args.db)
    print(", ".join(f"{count} {table}" for table, count in diagnosis.counts.items()))
    for study in diagnosis.unfinished:
        print(f"not completed: {study}; run its job again to resume it")
    if diagnosis.missing_tables:
        missing = ", ".join(diagnosis.missing_tables)
        print(f"tables added since the store was written, created by the next job that writes to it: {missing}")
    for problem in diagnosis.problems:
        print(f"problem: {problem}")
    print("store is sound" if not diagnosis.problems else f"{len(diagnosis.problems)} problem(s) found")
    return 1 if diagnosis.problems else 0


def profile(args: argparse.Namespace) -> int:
    """Measure (or read) the latency table of the model's sub-layer widths on this machine; print it."""
    from paretopress.inputs.models import quiet_transformers
    from paretopress.profile import profile_model

    quiet_transformers()
    table = profile_model(args.model, args.db, device=args.device, batch=args.batch, seq=args.seq, dtype=args.dtype,
                          threads=args.threads, repeats=args.repeats, channels=args.channels, force=args.force)
    print(f"latency table on {table.device}, {args.dtype}, batch {args.batch} x {args.seq} tokens (median of "
          f"{args.repeats} rounds), store {args.db}")
    _table(("module", "kept", "ms", "of full width"),
           [(module, kept, f"{1e3 * seconds:.3f}", _fraction(seconds, table.full[module]))
            for (module, kept), seconds in table.modules.items()])
    print(f"whole model {1e3 * table.model:.3f} ms; at full width the sub-layers take {1e3 * table.prunable:.3f} ms "
          f"({table.prunable / table.model:.1%}), the rest of the model {1e3 * (table.model - table.prunable):.3f} ms")
    if not table.consistent:
        print("the sub-layers measured no faster than the whole model: a search cannot use this table; measure again "
              "when the machine is quiet (--force) or with more --repeats")
    return 0


def _fraction(seconds: float, full: float) -> str:
    """A width's time as a fraction of the full width's; "-" where the full width measured no time at all (on a
    loaded machine a tiny module's difference to the model without it can come out at zero)."""
    return f"{seconds / full:.3f}" if full > 0 else "-"


def export(args: argparse.Namespace) -> int:
    from paretopress.inputs.models import quiet_transformers
    from paretopress.report.export import export_candidate  # torch and transformers: only where a model runs

    quiet_transformers()
    report = export_candidate(args.db, args.study, args.candidate, args.out, force=args.force, fmt=args.fmt)
    print(f"wrote {report.out}: {', '.join(report.files)} ({report.bytes:,} bytes) and paretopress.json")
    for metric, value in report.measured.items():
        stored = report.stored.get(metric)
        diff = report.relative_difference(metric)
        known = f"store {stored:.6g}, relative difference {diff:.2e}" if stored is not None else "not in the store"
        print(f"held-out {metric}: export {value:.6g} ({known})")
    for runtime, values in report.runtime.items():
        print(f"{runtime}: " + ", ".join(f"held-out {metric} {value:.6g}" for metric, value in values.items()))
    return 0


def _table(header: tuple[str, ...], rows: list[tuple]) -> None:
    cells = [tuple(str(c) for c in header), *[tuple(str(c) for c in row) for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
