"""A stand-in for experiments.paper_tasks.execute that the spawned pool workers of
run_tasks can import (test modules are heavier to import): it marks its task directory
`started`, then waits for SIGTERM as a training run's driver does, marks it `stopped` and
raises Preempted."""

import os
import time

from jaxrec.faults import Preempted, Preemption


def run_until_sigterm(task, cache_dir):
  del cache_dir
  with Preemption() as p:
    open(os.path.join(task.workdir, "started"), "w").close()
    for _ in range(1200):  # 60 s at most
      if p.requested:
        open(os.path.join(task.workdir, "stopped"), "w").close()
        raise Preempted(f"{task.label}: stopped")
      time.sleep(0.05)
  return {"wall_s": 0.0, "cpu_s": 0.0, "compile_s": 0.0}
