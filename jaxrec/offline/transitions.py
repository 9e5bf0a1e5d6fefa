"""Logged next-item transitions from a `Dataset`: one per interaction of every user sequence.

For the interaction at position t of a sequence s_0 .. s_{n-1} (t = 0 included: the empty
history, as the SQN authors' replay buffer and evaluation both start there):

  history       [L] int32  s_{t-L} .. s_{t-1}, right-aligned, -1 = padding (the online envs'
                           observation layout, `Dataset.padded`)
  action        int32      s_t, the logged next item
  reward        float32    1.0: a logged click (the datasets here carry one behaviour; LEA
                           Sec. 5.1 sets the reward to 1 for all interactions). A purchase /
                           click split belongs here when a dataset has one.
  next_history  [L] int32  s_{t+1-L} .. s_t
  done          bool       t == n - 1 (the sequence's last interaction)

The arrays are built with vectorised NumPy indexing (no per-example Python) and moved to the
device once; the training loop gathers its minibatches from them on device.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec.data.dataset import Dataset
from jaxrec.errors import DataError

REWARD_CLICK = 1.0


class Transitions(NamedTuple):
  """N logged transitions (module docstring); leading axis N on every field."""
  history: jax.Array  # [N, L] int32
  action: jax.Array  # [N] int32
  reward: jax.Array  # [N] float32
  next_history: jax.Array  # [N, L] int32
  done: jax.Array  # [N] bool
  # [N] int32 LEA's labeled item per transition, -1 = none (jaxrec.offline.augment); None
  # without augmentation (no field in the pytree, so the unaugmented programs are unchanged).
  aug_action: jax.Array | None = None

  @property
  def size(self) -> int:
    return int(self.action.shape[0])


def _windows(items: np.ndarray, starts: np.ndarray, ends: np.ndarray, length: int) -> np.ndarray:
  """[N, L] int32: row r holds items[max(starts[r], ends[r] - L):ends[r]], right-aligned with
  -1 padding (ends exclusive)."""
  src = ends[:, None] - length + np.arange(length)[None, :]  # [N, L] source indices
  valid = src >= starts[:, None]
  return np.where(valid, items[np.where(valid, src, 0)], -1).astype(np.int32)


def build_transitions(ds: Dataset, history_len: int, *, to_device: bool = True) -> Transitions:
  """Every interaction of `ds` as a transition (module docstring), in dataset order (user by
  user, oldest first). to_device=False keeps NumPy arrays (tests, host-side checks)."""
  if history_len <= 0:
    raise DataError(f"history length must be positive, got {history_len}")
  lengths = ds.lengths
  if ds.num_interactions == 0:
    raise DataError(f"dataset {ds.name!r}: no interactions, so no transitions")
  if lengths.min() < 2:
    user = int(np.argmin(lengths))
    short = int((lengths < 2).sum())
    raise DataError(f"dataset {ds.name!r}: {short} of {ds.num_users} users have a sequence "
                    f"shorter than 2 items (user {str(ds.user_keys[user])!r}: "
                    f"{int(lengths[user])} item(s)); next-item learning needs >= 2 per user "
                    "(--min_user 2 or more drops the shorter ones)")
  items = ds.seq_items.astype(np.int64)
  n = ds.num_interactions
  pos = np.arange(n, dtype=np.int64)
  starts = np.repeat(ds.offsets[:-1], lengths)
  ends = np.repeat(ds.offsets[1:], lengths)
  out = Transitions(history=_windows(items, starts, pos, history_len),
                    action=items.astype(np.int32),
                    reward=np.full(n, REWARD_CLICK, np.float32),
                    next_history=_windows(items, starts, pos + 1, history_len),
                    done=pos == ends - 1)
  return jax.tree_util.tree_map(jnp.asarray, out) if to_device else out
