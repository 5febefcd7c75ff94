"""Shared fixtures: a tiny random-init Llama with its own tokenizer, text files, one local Ray cluster per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support import make_job, make_tiny_model, write_text_files
from tests.support.faults import GENERATIONS, snapshot

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # unknown model ids fail at once instead of retrying a network
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

@pytest.fixture(scope="session")
def text_files(tmp_path_factory) -> list[Path]:
    return write_text_files(tmp_path_factory.mktemp("text"))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, text_files) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny-llama"), text_files)


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray instance for the whole session: ray.init costs seconds."""
    import ray

    from paretopress.cluster import connect_ray

    connect_ray(None, num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch, request):
    """Tiny-model tests get a session-private cache; tests marked `real` share the user's cache (model, text)."""
    if "real" not in request.keywords:
        monkeypatch.setenv("PARETOPRESS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory, tiny_model, text_files) -> Path:
    """A store with two finished studies of the tiny model (blocks, and sub-layers), for tests that only read."""
    from paretopress.run import run_job

    db = tmp_path_factory.mktemp("store") / "tiny.db"
    with pytest.MonkeyPatch.context() as patch:  # the per-test cache fixture does not reach session fixtures
        patch.setenv("PARETOPRESS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        run_job(make_job(tiny_model, text_files), db, executor="local")
        run_job(make_job(tiny_model, text_files, name="tiny-sub", **{"space.granularity": "sublayer",
                                                                       "space.drop": 3, "strategy.generations": 2}),
                db, executor="local")
    return db


@pytest.fixture(scope="module")
def uninterrupted(tiny_model, text_files, tmp_path_factory):
    """The tiny study run straight through (the fault tests compare interrupted runs with it)."""
    from paretopress.run import run_job

    db = tmp_path_factory.mktemp("straight") / "s.db"
    run_job(make_job(tiny_model, text_files, **GENERATIONS), db, executor="local")
    return snapshot(db)
