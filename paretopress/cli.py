"""The ``paretopress`` command line: run, studies, front, plot, export."""

from __future__ import annotations

import argparse
import logging
import sys

from paretopress.kernel.errors import UserError, user_message
from paretopress.signals import interruptible

DEFAULT_DB = "paretopress.db"
CLUSTER_DB = "~/paretopress.db"  # on the head node: a submitted job's working directory is temporary


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line and exit code 2 like every other user error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{self.prog}: {message}")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="paretopress", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("run", help="run (or resume) the study a job file describes")
    run.add_argument("job", help="job file (YAML)")
    _study_run_arguments(run)

    baseline = commands.add_parser("baseline", help="run only the one-shot baselines a job file names, no search")
    baseline.add_argument("job", help="job file (YAML) with a `baselines:` list")
    _study_run_arguments(baseline)

    studies = commands.add_parser("studies", help="list the studies in a store")
    studies.add_argument("--db", default=DEFAULT_DB)

    front = commands.add_parser("front", help="non-dominated candidates of a study (held-out KL vs its front.cost)")
    front.add_argument("study", help="study name or id")
    front.add_argument("--db", default=DEFAULT_DB)
    machine = front.add_mutually_exclusive_group()
    machine.add_argument("--csv", action="store_true", help="CSV on stdout instead of a table")
    machine.add_argument("--json", action="store_true", help="a JSON list of rows on stdout instead of a table")

    plot = commands.add_parser("plot", help="draw the fronts of one or more studies into one picture")
    plot.add_argument("studies", nargs="+", metavar="STUDY", help="study names or ids")
    plot.add_argument("-o", "--output", required=True, help="file to write: .png, .svg, .pdf or .html (interactive)")
    plot.add_argument("--db", default=DEFAULT_DB)

    submit = commands.add_parser("submit", help="run a job on a Ray cluster through its job server")
    submit.add_argument("job", help="job file (YAML); its folder is uploaded as the job's working directory")
    submit.add_argument("--address", help="the job server, e.g. http://HEAD:8265 (default: $RAY_API_SERVER_ADDRESS)")
    submit.add_argument("--db", default=CLUSTER_DB, help="store path on the head node (default: %(default)s)")

    jobs = commands.add_parser("jobs", help="the jobs a Ray cluster knows, with their status")
    jobs.add_argument("--address", help="the job server, e.g. http://HEAD:8265")

    logs = commands.add_parser("logs", help="the output of a submitted job")
    logs.add_argument("job_id")
    logs.add_argument("--address", help="the job server, e.g. http://HEAD:8265")

    doctor = commands.add_parser("doctor", help="check a store's integrity and report orphaned rows")
    doctor.add_argument("db", help="SQLite store")

    profile = commands.add_parser("profile", help="measure a model's latency table (each sub-layer at each width)")
    profile.add_argument("model", help="built-in alias, local checkpoint directory or Hugging Face model id")
    profile.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    profile.add_argument("--batch", type=int, default=1, help="sequences per forward pass (default: 1)")
    profile.add_argument("--seq", type=int, default=128, help="tokens per sequence (default: 128)")
    profile.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    profile.add_argument("--threads", type=int, help="CPU threads (default: torch's)")
    profile.add_argument("--repeats", type=int, default=30, help="timed rounds; the median is kept (default: 30)")
    profile.add_argument("--channels", type=float, nargs="+", metavar="FRACTION",
                         help="kept FFN channel fractions to measure (default: a width job's default grid)")
    profile.add_argument("--force", action="store_true", help="measure again what the table already holds")
    profile.add_argument("--db", default=DEFAULT_DB)

    export = commands.add_parser("export", help="write a candidate as a config and a loadable checkpoint")
    export.add_argument("study", help="study name or id")
    export.add_argument(
        "--candidate", required=True, help="candidate id (see `paretopress front`), or `best`: lowest held-out KL"
    )
    export.add_argument("--out", required=True, help="output directory")
    export.add_argument("--db", default=DEFAULT_DB)
    export.add_argument("--force", action="store_true", help="write into a non-empty directory")
    export.add_argument("--format", default="transformers", dest="fmt",
                        help="transformers (a safetensors checkpoint, the default) or gguf (one file for llama.cpp)")
    return parser


def _study_run_arguments(parser: argparse.ArgumentParser) -> None:
    """What `run` and `baseline` share: both run a study, in a store, somewhere, holding its lease."""
    parser.add_argument("--db", default=DEFAULT_DB, help=f"SQLite store (default: {DEFAULT_DB})")
    parser.add_argument("--address", help="Ray cluster address (default: start a local Ray instance)")
    parser.add_argument("--executor", choices=("ray", "local"), default="ray", help="where evaluations run")
    parser.add_argument("--takeover", action="store_true",
                        help="take the study over from another run that holds it (one whose machine died)")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    with interruptible():
        try:
            args = _parser().parse_args(argv)
            from paretopress import commands  # imported once the arguments are valid: a usage error costs nothing

            return getattr(commands, args.command)(args)
        except UserError as error:
            print(f"paretopress: error: {error}", file=sys.stderr)
            return 2
        except Exception as error:  # a full disk, a path without permission: the user's to fix, one line
            if (message := user_message(error)) is None:
                raise
            print(f"paretopress: error: {message}", file=sys.stderr)
            return 2
        except KeyboardInterrupt as interrupt:  # Ctrl-C, or SIGTERM from `ray job stop`, a timeout or a scheduler
            cause = f" by {interrupt}" if str(interrupt) else ""
            print(f"paretopress: interrupted{cause}; run the same command again to resume", file=sys.stderr)
            return getattr(interrupt, "exit_code", 130)


if __name__ == "__main__":
    sys.exit(main())
