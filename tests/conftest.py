"""Test-session settings: a persistent XLA compilation cache, set before jax is imported, so
programs the tests compile again for a new run (same shapes) come from disk. A user's own
JAX_COMPILATION_CACHE_DIR wins."""

import atexit
import os
import shutil
import tempfile

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _cache = tempfile.mkdtemp(prefix="jaxrec-xla-cache-")
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")


# The default suite runs on two workers (README: `pytest -n 2 --dist loadfile`), which take
# whole files in collection order. The longest files (each 30-110 s on the 2-core host) go
# first, so that no worker is left running one of them alone at the end.
LONGEST_FIRST = ("train/test_loop.py", "envs/test_envs.py", "envs/test_usermodels.py",
                 "train/test_sharding.py", "train/test_faults.py", "test_export.py",
                 "envs/test_bench.py", "agents/test_trackers.py", "offline/test_learners.py",
                 "offline/test_offline.py", "train/test_reward_input.py", "offline/test_lea.py",
                 "batchrl/test_run.py", "offline/test_dropout.py", "envs/test_dorl.py",
                 "experiments/test_bench_offline.py")


def pytest_collection_modifyitems(config, items):
  root = os.path.dirname(os.path.abspath(__file__))
  rank = {os.path.join(root, name): i for i, name in enumerate(LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(str(item.path), len(rank)))  # stable: the rest as is
