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
  None without a Q head). rng: a PRNG key in training (the encoder's dropout, SASRec only;
  `dropout` > 0), None in evaluation."""
  cfg: NetConfig
  q_head: bool = False
  dropout: float = 0.0

  @nn.compact
  def __call__(self, history, rng: jax.Array | None = None
               ) -> tuple[jax.Array, jax.Array | None]:
    s = StateEncoder(self.cfg, dropout=self.dropout, name="encoder")(history, rng)
    logits = nn.Dense(self.cfg.num_items, name="ce")(s)
    q = nn.Dense(self.cfg.num_items, name="q")(s) if self.q_head else None
    return logits, q
