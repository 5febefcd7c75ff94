"""Where a study's wall time goes: evaluation, and the controller with the store around it; workers against threads.

Runs the demo job (``examples/smollm2-depth.yaml``, SmolLM2-135M, depth drop 6) with fewer generations into fresh
stores, once per layout (``WxT``: W workers of T threads each), on local Ray. The executor is wrapped to time how
long the controller waits for results; the rest of the search phase (first dispatch to last result) is the
controller's own work between results: strategy, bookkeeping, store. The store's methods are also timed in place
(all their calls, including the lookups before the first dispatch).

    .venv/bin/python benchmarks/overhead.py [--generations 4] [--layouts 1x1 2x1 1x2] [--out runs/overhead]
"""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

from paretopress.inputs.models import quiet_transformers
from paretopress.job import load_job
from paretopress.run import run_job
from paretopress.store.store import Store

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "smollm2-depth.yaml"
STORE_CALLS = ("lookup", "record", "record_hypervolume", "candidate_id")


class Waiting:
    """The real executor, timing how long each ``next`` on its results blocks the controller."""

    def __init__(self, executor) -> None:
        self.executor, self.waiting, self.first, self.last = executor, 0.0, None, None

    def run(self, trials):
        results = self.executor.run(trials)
        self.first = self.first or time.perf_counter()
        while True:
            start = time.perf_counter()
            item = next(results, None)
            self.waiting += time.perf_counter() - start
            self.last = time.perf_counter()
            if item is None:
                return
            yield item

    def close(self) -> None:
        self.executor.close()


def timed_store() -> dict[str, float]:
    """Time every call of the store methods the controller makes (the real methods, wrapped in place)."""
    spent = dict.fromkeys(STORE_CALLS, 0.0)
    for name in STORE_CALLS:
        method = getattr(Store, name)

        @functools.wraps(method)
        def wrapper(*args, _method=method, _name=name, **kwargs):
            start = time.perf_counter()
            try:
                return _method(*args, **kwargs)
            finally:
                spent[_name] += time.perf_counter() - start
        setattr(Store, name, wrapper)
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--layouts", nargs="+", default=["1x1", "2x1"], help="workers x threads per worker")
    parser.add_argument("--out", default="runs/overhead")
    args = parser.parse_args()
    quiet_transformers()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    spent = timed_store()
    base = load_job(EXAMPLE)
    print(f"{base.name}, {args.generations} generations x {base.strategy.offspring} offspring")
    print("| workers x threads | study wall s | search s | waiting for results s | controller + store s "
          "(search - waiting) | of which store calls s | controller + store share of the study | evaluations "
          "| evaluations/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for layout in args.layouts:
        workers, threads = map(int, layout.split("x"))
        job = base.model_validate({**base.model_dump(), "strategy": {**base.strategy.model_dump(),
                                                                     "generations": args.generations},
                                   "run": {**base.run.model_dump(), "workers": workers,
                                           "threads_per_worker": threads}})
        db = Path(args.out) / f"layout{layout}.db"
        db.unlink(missing_ok=True)
        for key in spent:
            spent[key] = 0.0
        waiting = None

        def wrap(executor):
            nonlocal waiting
            waiting = Waiting(executor)
            return waiting

        start = time.perf_counter()
        outcome = run_job(job, db, wrap_executor=wrap)
        wall = time.perf_counter() - start
        search = waiting.last - waiting.first
        controller = search - waiting.waiting  # everything between results: the controller, the store, strategy
        print(f"| {layout} | {wall:.1f} | {search:.1f} | {waiting.waiting:.1f} | {controller:.2f} | "
              f"{sum(spent.values()):.2f} | {controller / wall:.2%} | {outcome.evaluated} | "
              f"{outcome.evaluated / search:.2f} |")


if __name__ == "__main__":
    main()
