"""Timing helpers shared by the benchmark programs."""

from __future__ import annotations

import os
import platform
import time

import jax
import numpy as np


def best_time(fn, min_time: float) -> float:
  """Best seconds per call of fn() over repeated calls lasting >= min_time, after a warm-up
  call (compilation) that is not timed."""
  jax.block_until_ready(fn())
  best, start = np.inf, time.perf_counter()
  while True:
    t = time.perf_counter()
    jax.block_until_ready(fn())
    best = min(best, time.perf_counter() - t)
    if time.perf_counter() - start > min_time:
      return best


def machine() -> dict:
  return {"device": str(jax.devices()[0]), "cpu_count": os.cpu_count(),
          "platform": platform.platform(), "jax": jax.__version__}
