"""The offline learners' network: the shared `StateEncoder` (SASRec or GRU4Rec) and two heads.

  ce  the supervised head: logits over all items for the next item (SQN's "ce-logits",
      LEA Eq. 4's fully connected layer + softmax); recommendations come from it.
  q   the Q head, Q(s, .) over all items (SQN's "q-value" output), only for learners that
      read it (`q_head`); it shares the encoder with the ce head, as in SQN.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from jaxrec.nets.networks import NetConfig, StateEncoder

BACKBONES = {"sasrec": "sasrec", "gru": "gru"}  # --backbone -> NetConfig.tracker


class SupervisedQNet(nn.Module):
  """history [..., L] int32 (-1 = padding, right-aligned) -> (logits [..., I], Q [..., I] or
  None without a Q head)."""
  cfg: NetConfig
  q_head: bool = False

  @nn.compact
  def __call__(self, history) -> tuple[jax.Array, jax.Array | None]:
    s = StateEncoder(self.cfg, name="encoder")(history)
    logits = nn.Dense(self.cfg.num_items, name="ce")(s)
    q = nn.Dense(self.cfg.num_items, name="q")(s) if self.q_head else None
    return logits, q
