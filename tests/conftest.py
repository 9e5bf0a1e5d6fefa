"""Test-session settings: a persistent XLA compilation cache, set before jax is imported, so
programs the tests compile again for a new run (same shapes) come from disk. A user's own
JAX_COMPILATION_CACHE_DIR wins."""

import atexit
import fcntl
import os
import shutil
import tempfile

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _cache = tempfile.mkdtemp(prefix="jaxrec-xla-cache-")
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")


# The default and slow suites run on two workers (README: `pytest -n 2 --dist loadfile`),
# which take whole files in collection order. The longest files go first, so that no worker is
# left running one of them alone at the end: the slow suite's (fault drills ~12 min, the paper
# launcher ~5 min, the MovieLens calibration and the default preset ~3-4 min each), then the
# default suite's (each 30-110 s on the 2-core host).
LONGEST_FIRST = ("experiments/test_fault_drill.py", "experiments/test_paper.py",
                 "envs/test_calibrate.py", "envs/test_cli.py", "experiments/test_offline_table.py",
                 "train/test_loop.py", "envs/test_envs.py", "envs/test_usermodels.py",
                 "train/test_sharding.py", "train/test_faults.py", "test_export.py",
                 "envs/test_bench.py", "agents/test_trackers.py", "offline/test_learners.py",
                 "offline/test_offline.py", "train/test_reward_input.py", "offline/test_lea.py",
                 "batchrl/test_run.py", "offline/test_dropout.py", "envs/test_dorl.py",
                 "experiments/test_bench_offline.py")


def pytest_collection_modifyitems(config, items):
  root = os.path.dirname(os.path.abspath(__file__))
  rank = {os.path.join(root, name): i for i, name in enumerate(LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(str(item.path), len(rank)))  # stable: the rest as is


def built_once(tmp_path_factory, name: str, build) -> str:
  """A directory `build(path)` writes, built once per test run and shared by its xdist workers:
  the first worker to take the lock builds it, the others wait for it and reuse it. `build`
  must write atomically (build_envs does: a temp directory renamed when complete). For the
  session fixtures' env directories, which the tests only read (each worker used to fit its
  own copy of the same env)."""
  root = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    root = root.parent  # pytest-N/, above each worker's popen-gwK/
  out = os.path.join(str(root), "built-once", name)
  os.makedirs(os.path.dirname(out), exist_ok=True)
  with open(out + ".lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not os.path.exists(out):
      build(out)
  return out
