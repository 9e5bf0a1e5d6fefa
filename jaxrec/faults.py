"""Crash points and preemption: what the fault drills (experiments.fault_drill) need.

Failpoints. `failpoint(name)` is a no-op unless the environment variable JAXREC_FAILPOINTS
names it: `JAXREC_FAILPOINTS="shards.record_written=3,train.saving=1"` makes this process
SIGKILL itself (no cleanup, no atexit, no flush: what a preempted host or the OOM killer does)
the 3rd time it reaches `shards.record_written`, or the 1st time it reaches `train.saving`.
The points sit between the steps of every multi-file commit (see POINTS), so a drill can kill a
job exactly where a torn write would do damage; random-time kills from outside cover the rest.

Preemption. `Preemption()` turns SIGTERM (what Kubernetes, SLURM and spot reclaimers send
first) into a flag that the training loops read at their next safe point (the end of a jitted
epoch, after its checkpoint is written, or after a label shard is committed); they then raise
`Preempted`, which the CLIs turn into a one-line message and exit status 143 (128 + SIGTERM).
Rerunning the same command resumes. A second SIGTERM, or one outside a Preemption block,
keeps the default action (terminate at once).
"""

from __future__ import annotations

import os
import signal
import threading

from jaxrec.errors import JaxrecError

ENV = "JAXREC_FAILPOINTS"
PREEMPTED_EXIT = 128 + signal.SIGTERM

# Every failpoint in the code base (a drill naming another one is refused).
POINTS = {
    "shards.temp_written": "a shard's npz is in its temp file, nothing renamed yet",
    "shards.npz_renamed": "NAME.npz is in place, its record NAME.json is not",
    "shards.record_written": "NAME.json is in place, manifest.json not yet rewritten",
    "shards.manifest_temp": "the new manifest is in its temp file, not renamed",
    "train.saving": "an epoch checkpoint save has started (orbax), not finished",
    "train.saved": "an epoch checkpoint is finished, metrics.jsonl not yet rewritten",
    "pretrain.saving": "a pre-training epoch checkpoint save has started, not finished",
    "pretrain.saved": "a pre-training epoch checkpoint is finished, metrics.jsonl not yet "
                      "rewritten",
    "pretrain.policy": "pre-training finished, policy/ being written",
    "offline.saving": "an offline epoch checkpoint save has started (orbax), not finished",
    "offline.saved": "an offline epoch checkpoint is finished, metrics.jsonl not yet rewritten",
    "label.labeled": "a label shard is computed, not yet committed",
}

_counts: dict[str, int] = {}
_lock = threading.Lock()


def parse(spec: str) -> dict[str, int]:
  """'a=1,b=2' -> {'a': 1, 'b': 2}; raises ConfigError-like JaxrecError on a bad spec."""
  out = {}
  for part in filter(None, (p.strip() for p in spec.split(","))):
    name, _, n = part.partition("=")
    if name not in POINTS or not n.isdigit() or int(n) < 1:
      raise JaxrecError(f"{ENV}: bad entry {part!r}; expected NAME=N (N >= 1) with NAME one of "
                        f"{', '.join(sorted(POINTS))}")
    out[name] = int(n)
  return out


def failpoint(name: str) -> None:
  """SIGKILLs this process if JAXREC_FAILPOINTS says so for this hit of `name`."""
  spec = os.environ.get(ENV)
  if not spec:
    return
  if name not in POINTS:
    raise KeyError(f"unknown failpoint {name!r}")  # a typo in the code base, not user input
  want = parse(spec).get(name)
  if want is None:
    return
  with _lock:
    _counts[name] = _counts.get(name, 0) + 1
    hit = _counts[name] == want
  if hit:
    os.kill(os.getpid(), signal.SIGKILL)


class Preempted(JaxrecError):
  """SIGTERM arrived; the state of `where` is saved. CLIs exit with PREEMPTED_EXIT."""


class Preemption:
  """`with Preemption() as p: ... if p.requested: save; raise Preempted(...)`.

  Only the main thread can install signal handlers; elsewhere (a test calling the library in a
  worker thread) this is inert and `requested` stays False."""

  def __init__(self):
    self.requested = False
    self._old = None

  def _handler(self, signum, frame):
    del frame
    self.requested = True
    # A second SIGTERM terminates at once (the default action).
    signal.signal(signum, signal.SIG_DFL)

  def __enter__(self) -> Preemption:
    if threading.current_thread() is threading.main_thread():
      self._old = signal.signal(signal.SIGTERM, self._handler)
    return self

  def __exit__(self, *exc) -> None:
    if self._old is not None:
      signal.signal(signal.SIGTERM, self._old)
      self._old = None


class Forwarding(Preemption):
  """A launcher's Preemption: `with Forwarding(pids) as f: ... if f.requested: ...`. Each
  SIGTERM to this process is passed on to the processes `pids()` names (its stages or workers,
  which stop at their own safe points) instead of ending this one; `requested` turns True.
  Inert outside the main thread, as Preemption."""

  def __init__(self, pids):
    super().__init__()
    self._pids = pids

  def _handler(self, signum, frame):
    del frame
    self.requested = True
    for pid in self._pids():
      try:
        os.kill(pid, signum)
      except ProcessLookupError:  # exited since pids() looked
        pass
