"""Scoring the candidates of one selection stage together: every shared prefix of blocks runs once.

A stage's candidates are scored on the same samples and mostly agree with each other (and their parent) unit by
unit. Ordered as a trie over their blocks (a block's key is the levels of its units, ``Space.unit_blocks``), the
candidates that agree on blocks ``0..j-1`` compute the same residual stream into block ``j``: it is computed once
and kept, and each branch continues from it. Every space kind shares this way, because all of them differ unit by
unit.

Each segment runs the real model with the genome applied (``Space.applied``): the layer list is cut to the blocks
from the segment's start on, the kept stream is handed to the first of them by a forward pre-hook, and the stream
into the segment's end is taken by another pre-hook, which stops the forward there (so no head is computed for a
prefix). Leaves run to the logits. The arithmetic is that of evaluating each candidate alone, on the same batches.

Memory: the walk is depth first, so at most one kept stream per branching depth lives at a time, each
[batch, seq, hidden] in the model's dtype: ``branch_bytes`` reports the most held during a stage.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from paretopress.evaluators.forward import TailSample, estimated
from paretopress.evaluators.metrics import Tally
from paretopress.evaluators.teacher import TeacherOutputs
from paretopress.search.strategies.base import Trial
from paretopress.spaces.anatomy import read_anatomy
from paretopress.spaces.base import Space
from paretopress.spaces.genome import Genome


@dataclass(frozen=True)
class _Batch:
    """What every branch of one batch's walk reads: its tokens, the teacher's outputs, each genome's block keys and
    tally, and the tail sample when the head is estimated."""

    tokens: torch.Tensor
    teacher: TeacherOutputs
    keys: dict[Genome, tuple[tuple[int, ...], ...]]
    tallies: dict[Genome, Tally]
    tail: TailSample | None


class _Reached(Exception):
    def __init__(self, stream: torch.Tensor) -> None:
        self.stream = stream


class StageForward:
    """Scores genomes of one space on one model, sharing every common prefix of blocks."""

    def __init__(self, model: nn.Module, space: Space) -> None:
        self.model, self.space = model, space
        self.anatomy = read_anatomy(model)
        self.original = list(self.anatomy.layers(model))
        self.index = {id(layer): i for i, layer in enumerate(self.original)}
        blocks = space.unit_blocks()
        self.units_of = [tuple(u for u, b in enumerate(blocks) if b == block) for block in range(len(self.original))]
        self.branch_bytes = 0  # the most memory kept streams held at once, over the stages scored so far

    def score(self, genomes: list[Genome], tokens: torch.Tensor, teacher: TeacherOutputs, names: tuple[str, ...],
              batch_size: int, tail: TailSample | None = None) -> list[dict[str, float]]:
        """The values of every genome (duplicates allowed) on ``tokens`` [samples, seq], batch by batch.

        With ``tail``, the output head is evaluated only where the metrics need it and the rest of its normaliser is
        estimated from the tail sample (``evaluators.forward.estimated``).
        """
        distinct = list(dict.fromkeys(genomes))
        tallies = {genome: Tally(names) for genome in distinct}
        keys = {genome: self._keys(genome) for genome in distinct}
        if tallies[distinct[0]].needs_logits:
            with torch.inference_mode():
                for start in range(0, tokens.shape[0], batch_size):
                    rows = slice(start, min(start + batch_size, tokens.shape[0]))
                    self._walk(distinct, 0, None, _Batch(tokens[rows], teacher.rows(rows), keys, tallies, tail), 0)
        values = {genome: self._values(genome, tallies[genome]) for genome in distinct}
        return [values[genome] for genome in genomes]

    def _values(self, genome: Genome, tally: Tally) -> dict[str, float]:
        """The tally's values; the genome is applied only when a value is counted on the model (``params``)."""
        if not tally.counts_parameters:
            return tally.values(self.model)
        with self.space.applied(self.model, genome) as applied:
            return tally.values(applied)

    def _keys(self, genome: Genome) -> tuple[tuple[int, ...], ...]:
        return tuple(tuple(genome.levels[u] for u in units) for units in self.units_of)

    def _walk(self, group: list[Genome], start: int, stream: torch.Tensor | None, batch: _Batch, held: int) -> None:
        """Score ``group``, whose genomes agree on the blocks before ``start`` (``stream`` flows into it)."""
        if len(group) == 1:
            self._leaf(group[0], start, stream, batch)
            return
        split = next(b for b in range(start, len(self.original)) if len({batch.keys[g][b] for g in group}) > 1)
        if split > start:
            stream = self._run(group[0], start, split, stream, batch.tokens)
            held += stream.numel() * stream.element_size()
            self.branch_bytes = max(self.branch_bytes, held)
        branches: dict[tuple[int, ...], list[Genome]] = {}
        for genome in group:
            branches.setdefault(batch.keys[genome][split], []).append(genome)
        for branch in branches.values():
            self._walk(branch, split, stream, batch, held)

    def _leaf(self, genome: Genome, start: int, stream: torch.Tensor | None, batch: _Batch) -> None:
        """The genome's blocks from ``start`` to its outputs, added to its tally."""
        tokens, teacher, tally = batch.tokens, batch.teacher, batch.tallies[genome]
        if batch.tail is None:
            tally.add(self._run(genome, start, None, stream, tokens), tokens, teacher)
            return
        with self.space.applied(self.model, genome) as model, self._from(model, start, stream):
            hidden = model.get_decoder()(input_ids=tokens, use_cache=False).last_hidden_state
            tally.add_outputs(estimated(hidden, model.get_output_embeddings(), tokens, teacher.top_ids.long(),
                                        batch.tail), teacher)

    def _run(self, genome: Genome, start: int, stop: int | None, stream: torch.Tensor | None,
             tokens: torch.Tensor) -> torch.Tensor:
        """The genome's blocks from ``start``: the stream into block ``stop``, or the logits when ``stop`` is None."""
        with self.space.applied(self.model, genome) as model, self._from(model, start, stream) as layers:
            if stop is None:
                return model(input_ids=tokens, use_cache=False).logits.float()
            handle = self._reader(model, layers, stop).register_forward_pre_hook(_stop_here, with_kwargs=True)
            try:
                model.get_decoder()(input_ids=tokens, use_cache=False)
            except _Reached as reached:
                return reached.stream
            finally:
                handle.remove()
        raise RuntimeError("the forward ended before the segment's end")

    @contextmanager
    def _from(self, model: nn.Module, start: int, stream: torch.Tensor | None) -> Iterator[list[nn.Module]]:
        """The applied model's layers from block ``start`` on, fed ``stream`` (the embeddings when None)."""
        layers = [layer for layer in self.anatomy.layers(model) if self.index[id(layer)] >= start]
        with self.anatomy.running(model, layers, [self.index[id(layer)] for layer in layers]):
            handle = None
            if stream is not None:
                handle = self._reader(model, layers, start).register_forward_pre_hook(_feed(stream), with_kwargs=True)
            try:
                yield layers
            finally:
                if handle is not None:
                    handle.remove()

    def _reader(self, model: nn.Module, layers: list[nn.Module], block: int) -> nn.Module:
        """The module that reads the stream into ``block``: the first kept layer from it on, else the final norm."""
        later = next((layer for layer in layers if self.index[id(layer)] >= block), None)
        if later is not None:
            return later
        if self.anatomy.final_norm is None:
            raise ValueError(f"{type(model).__name__} has no final norm to read the last layer's output from")
        return model.get_submodule(self.anatomy.final_norm)


def stage_jobs(trials: list[Trial], space: Space, parts: int) -> list[list[int]]:
    """The trials as evaluation jobs: those sharing samples and evaluators together, in trie order, each such stage
    cut into at most ``parts`` contiguous jobs (one per worker), so that neighbours in the trie share a worker."""
    blocks = space.unit_blocks()
    stages: dict[tuple, list[int]] = {}
    for index, trial in enumerate(trials):
        stages.setdefault((trial.pool, trial.samples, trial.evaluators), []).append(index)
    jobs = []
    for members in stages.values():
        members.sort(key=lambda i: sorted(zip(blocks, range(len(blocks)), trials[i].genome.levels, strict=True)))
        count = min(parts, len(members))
        bounds = [round(k * len(members) / count) for k in range(count + 1)]
        jobs += [members[a:b] for a, b in itertools.pairwise(bounds)]
    return jobs


def _stream_argument(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _stop_here(_module: nn.Module, args: tuple, kwargs: dict) -> None:
    raise _Reached(_stream_argument(args, kwargs))


def _feed(stream: torch.Tensor):
    """A pre-hook that hands ``stream`` to the module in place of the stream the forward computed."""
    def hook(_module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if args:
            return (stream, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": stream}
    return hook
