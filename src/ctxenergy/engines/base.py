"""The engine contract: load once, then run a prompt of token ids for 1 (prefill) or G (generate) output tokens.

A run's ids are one prompt (1-D) or a batch of B prompts of equal length (2-D, shape (B, L)) run together;
tokens_in and tokens_out count the whole batch (B * L in, B * G out).

Every run reports host timestamps on time.perf_counter(), the clock of the power sampler:
start (just before the prompt is submitted), first_token (the first output token exists on the host)
and end (the last output token exists on the host); start <= first_token <= end.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ctxenergy.settings import Settings


@dataclass(frozen=True)
class RunTiming:
    start: float
    first_token: float
    end: float
    tokens_in: int
    tokens_out: int

    @property
    def prefill_s(self) -> float:
        return self.first_token - self.start

    @property
    def total_s(self) -> float:
        return self.end - self.start


class OutOfMemory(Exception):
    """The engine ran out of device memory for this cell; the cell is recorded with status 'oom'."""


class Engine(ABC):
    name: str

    @classmethod
    def create(cls, name: str, spec, settings: Settings, options: dict) -> Engine:
        """The engine `name` (its registry entry names this class) for `spec` under `settings`; `options` are its
        settings of `engine_options:` (EngineInfo.options). Each engine the registry names implements it."""
        raise NotImplementedError(f"{cls.__name__} is not an engine of the registry (engines/registry.py)")

    @abstractmethod
    def load(self) -> None:
        """Build or load the model and start the engine (outside every measured window)."""

    @abstractmethod
    def run(self, ids: np.ndarray, max_new_tokens: int) -> RunTiming:
        """One request of `ids` (or one batch: a row per request) producing exactly `max_new_tokens` tokens per
        request (greedy, EOS ignored)."""

    @classmethod
    def batch_limit_before_load(
        cls, batch_size: int, length: int, n_out: int, spec, options: dict, dtype: str
    ) -> str | None:
        """Why this engine, with `options` (EngineInfo.options), cannot run `batch_size` prompts of `length` tokens
        (+ n_out) as one batch, known from the config alone, before the meter opens or the engine loads; or None."""
        return None

    def batch_limit(self, batch_size: int, length: int, n_out: int) -> str | None:
        """Why the loaded engine cannot run `batch_size` prompts of `length` tokens (+ n_out) as one batch, or None
        (ctxenergy.batching decides what is knowable before loading)."""
        return None

    def synchronize(self) -> None:
        """Wait until all device work issued so far has finished."""

    def versions(self) -> dict[str, str]:
        return {}

    def settings(self) -> dict:
        """Engine settings that change the numbers (recorded in each cell)."""
        return {}

    def run_notes(self) -> dict:
        """How the last cell's runs were executed where that can vary per cell (recorded in the cell)."""
        return {}

    def attention_kernels(self) -> dict[str, str]:
        """The attention kernel that ran this cell's prefill and decode, where the engine can tell (recorded in the
        cell as observed, not as a setting: ctxenergy.engines.sdpa_kernels)."""
        return {}

    def reset(self) -> None:
        """Between two cells on one loaded engine: drop what the last cell left behind (caches, freed memory held
        by an allocator), keep the model."""

    def close(self) -> None:
        pass
