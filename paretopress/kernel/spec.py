"""The base of every job-file section: closed (unknown keys are errors) and frozen (a spec is a value)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
