"""Budget-preserving operators shared by every strategy."""

from __future__ import annotations

import numpy as np

from paretopress.spaces.base import Space
from paretopress.spaces.genome import Genome


def flip_count(rng: np.random.Generator) -> int:
    """min(U{1,3}, U{1,3}): one flip with probability 5/9, two with 3/9, three with 1/9."""
    return min(int(rng.integers(1, 4)), int(rng.integers(1, 4)))


def level_switch(genome: Genome, space: Space, rng: np.random.Generator) -> Genome:
    """EvoPress' mutation: ``flip_count`` flips, each raising one unit a level and lowering another of its group.

    Because both units of a flip belong to the same switch group, the group's level sum (its budget) is unchanged.
    """
    flips = flip_count(rng)
    levels = list(genome.levels)
    movable = [g for g in space.switch_groups if len(g) > 1]
    for _ in range(flips):
        group = movable[rng.integers(len(movable))]
        can_rise = [i for i in group if levels[i] < space.num_levels[i] - 1]
        up = can_rise[rng.integers(len(can_rise))]
        can_fall = [i for i in group if levels[i] > 0 and i != up]
        down = can_fall[rng.integers(len(can_fall))]
        levels[up] += 1
        levels[down] -= 1
    return Genome(tuple(levels))


def free_switch(genome: Genome, space: Space, rng: np.random.Generator) -> Genome:
    """The level switch for spaces with a limit: ``flip_count`` flips between any two free units, then
    ``space.repair``.

    Level costs differ between units, so a flip may break the limit or leave budget unused; the repair restores it.
    """
    levels, free = list(genome.levels), space.free_units
    for _ in range(flip_count(rng)):
        can_rise = [i for i in free if levels[i] < space.num_levels[i] - 1]
        up = can_rise[rng.integers(len(can_rise))]
        can_fall = [i for i in free if levels[i] > 0 and i != up]
        levels[up] += 1
        if can_fall:
            levels[can_fall[rng.integers(len(can_fall))]] -= 1
    return space.repair(Genome(tuple(levels)), rng)


def mutate(genome: Genome, space: Space, rng: np.random.Generator) -> Genome:
    """The mutation every strategy uses: the level switch, or for spaces with a limit the free switch and repair;
    a space with both (a joint space: exact depth, GGUF bytes at most) gets both."""
    if space.limit is None:
        return level_switch(genome, space, rng)
    if any(len(group) > 1 for group in space.switch_groups):
        genome = level_switch(genome, space, rng)
    return free_switch(genome, space, rng)


def distinct_offspring(
    parent: Genome, space: Space, count: int, rng: np.random.Generator, max_tries_per_child: int = 50
) -> list[Genome]:
    """``count`` mutants of ``parent``, distinct from each other and from the parent (fewer if the space is tiny)."""
    seen = {parent}
    children: list[Genome] = []
    for _ in range(count * max_tries_per_child):
        if len(children) == count:
            break
        child = mutate(parent, space, rng)
        if child not in seen:
            seen.add(child)
            children.append(child)
    return children
