"""The batch-RL learners' network: one state tracker (jaxrec.nets StateEncoder, with its MLP)
under linear heads, one per output the learner reads.

The peer's (EasyRL4Rec run_DiscreteBCQ / CQL / CRR.py): the state tracker (avg over the last 3
items, reward appended), then tianshou nets: BCQ and CRR share a `Net(state_dim, 64)` (one
linear layer) under two `Actor` / `Critic` heads, each an MLP 64-64 to the items; CQL one
`Net(state_dim, items, hidden 64-64, num_atoms=20)`. Here the MLP 64-64 (`NetConfig.hidden`) is
shared by the heads and each head is one linear layer: the same depth, fewer parameters in the
heads.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from jaxrec.nets.networks import NetConfig, StateEncoder


class MultiHead(nn.Module):
  """history [..., L] (or (items, rewards) with a reward input) -> one output [..., size] per
  entry of `sizes`, linear heads on one encoder."""
  cfg: NetConfig
  sizes: tuple[int, ...]

  @nn.compact
  def __call__(self, history) -> tuple[jax.Array, ...]:
    s = StateEncoder(self.cfg, name="encoder")(history)
    return tuple(nn.Dense(n, name=f"head_{i}")(s) for i, n in enumerate(self.sizes))
