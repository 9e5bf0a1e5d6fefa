"""The `hf` backend: transformers (CPU, or one GPU by --device), scoring the label tokens.

One forward pass per batch of prompts; the next-token logits at the end of each prompt,
restricted to the k + 1 label tokens, give the greedy constrained choice and the soft
preference (`base.choose`). The Yes/No template (`prompts.YESNO_TEMPLATE_VERSION`) asks k
prompts per request, one forward pass per request over its k prompts (they share the head and
the history, run once), and scores each candidate by logit(Yes) - logit(No)
(`base.yesno_label_scores`). It exercises the real text path (prompt, tokenizer, model) on
machines without a GPU, and serves one GPU without vLLM (--device=cuda); the vllm backend is
the production one (continuous batching, prefix caching).
"""

from __future__ import annotations

import os

import numpy as np

from jaxrec.errors import ConfigError
from jaxrec.shards import Catalog, LabelShard, RequestShard
from llm_labeler.backends.base import (answer_token_ids, choose, label_token_ids,
                                       yesno_label_scores)
from llm_labeler.prompts import (TEMPLATE_VERSION, PromptRenderer, chat_wrapper, has_none,
                                 letters, special_strings)


def load_model(model: str, dtype: str = "float32"):
  """(tokenizer, model) from a local directory or a local .gguf file; never a hub download."""
  import torch
  from transformers import AutoModelForCausalLM, AutoTokenizer
  if not os.path.exists(model):
    raise ConfigError(f"--model {model!r}: no such local file or directory")
  kwargs = {}
  path = model
  if model.endswith(".gguf"):
    path, kwargs["gguf_file"] = os.path.dirname(os.path.abspath(model)), os.path.basename(model)
  tok = AutoTokenizer.from_pretrained(path, local_files_only=True, **kwargs)
  torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16,
                 "float16": torch.float16, "auto": "auto"}[dtype]
  lm = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch_dtype,
                                            **kwargs)
  lm.eval()
  return tok, lm


def common_prefix(enc: list[list[int]]) -> int:
  """Tokens every encoded prompt starts with (the template's head), leaving each prompt at
  least one token of its own."""
  n = min(len(e) for e in enc) - 1
  first = enc[0]
  for e in enc[1:]:
    n = next((i for i in range(n) if e[i] != first[i]), n)
  return max(n, 0)


def label_logits(model, enc: list[list[int]], pad: int, prefix: int = 0, device=None):
  """[B, V] next-token logits after each encoded prompt (left padding; positions count real
  tokens). With prefix > 0 the first `prefix` tokens, identical in every prompt, run once with
  the batch size 1 and their keys/values (gradients included) are broadcast to the batch, which
  attends to them as to its own: the same logits as without, for fewer tokens."""
  import torch
  cache, offset = None, 0
  if prefix:
    from transformers import DynamicCache
    head = torch.tensor(enc[0][:prefix], device=device)[None]
    pkv = model(input_ids=head, use_cache=True, logits_to_keep=1).past_key_values
    cache = DynamicCache(ddp_cache_data=[
        (layer.keys.expand(len(enc), -1, -1, -1), layer.values.expand(len(enc), -1, -1, -1))
        for layer in pkv.layers])
    enc, offset = [e[prefix:] for e in enc], prefix
  length = max(len(e) for e in enc)
  ids = torch.full((len(enc), length), pad, dtype=torch.long)
  mask = torch.zeros((len(enc), offset + length), dtype=torch.long)
  mask[:, :offset] = 1
  for r, e in enumerate(enc):  # left padding (after the shared head): the label is last
    ids[r, length - len(e):] = torch.tensor(e)
    mask[r, offset + length - len(e):] = 1
  pos = (mask.cumsum(-1) - 1).clamp(min=0)[:, offset:]
  ids, mask, pos = ids.to(device), mask.to(device), pos.to(device)
  return model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
               use_cache=prefix > 0, logits_to_keep=1).logits[:, -1, :]


class HFBackend:
  name = "hf"

  def __init__(self, model: str, catalog: Catalog, k: int, batch_size: int = 16,
               chat_template: bool = False, dtype: str = "float32", device: str = "cpu",
               loaded=None, lora: str = "", share_prefix: bool = True,
               template: str = TEMPLATE_VERSION):
    """`loaded`: an already built (tokenizer, model) pair, e.g. a benchmark's randomly
    initialised one; `model` then only names it. `lora`: an adapter directory of
    llm_labeler.tune, checked against the model, template and k, merged into the weights.
    `share_prefix`: the tokens a batch's prompts share (the template's head, about a third of
    a Table 1 prompt) run once per batch (`label_logits`): the same logits, fewer tokens.
    `template`: the prompt template of the requests (llm_labeler.prompts.TEMPLATES)."""
    from llm_labeler import lora as lora_lib
    # The adapter's files, template and k are checked before torch is imported or a model read.
    manifest = lora_lib.check_files(lora, k, chat_template, template=template) if lora else None
    import torch
    self._torch = torch
    self.device = torch.device(device)
    self.tokenizer, self.lm = loaded if loaded is not None else load_model(model, dtype)
    if lora:
      lora_lib.check_base(manifest, lora, self.tokenizer, self.lm)
      self.lm = lora_lib.apply(self.lm, lora)
    self.lm.to(self.device)
    self.tokenizer.padding_side = "left"
    if self.tokenizer.pad_token is None:
      self.tokenizer.pad_token = self.tokenizer.eos_token
    chat = chat_wrapper(self.tokenizer) if chat_template else None
    self.renderer = PromptRenderer(catalog, k, chat, special_strings(self.tokenizer), template)
    self.none_option = has_none(template)
    self.k = k
    # Yes/No template: the two answer tokens of each of a request's k prompts.
    self.label_ids = (answer_token_ids(self.tokenizer) if self.renderer.per_request > 1
                      else label_token_ids(self.tokenizer, letters(k)))
    self.batch_size = batch_size
    self.share_prefix = share_prefix
    self.model = os.path.abspath(model)
    self.meta = {"chat_template": chat_template, "dtype": dtype, "label_token_ids": self.label_ids}
    if lora:  # the model name is a consistent key: tuned and untuned labels never mix
      self.model += " " + lora_lib.describe(lora, manifest)
      self.meta["lora"] = {"path": os.path.abspath(lora), "files": manifest["files"]}
    # The device is not in meta: labels do not depend on it beyond float rounding, and shards
    # labeled on CPU and GPU hosts may share one --out.
    self.prompt_tokens = 0

  def scores(self, prompts: list[str], group: int = 0) -> np.ndarray:
    """[N, len(label_ids)] next-token logits of the label tokens after each prompt. `group`
    > 0: forward passes of `group` prompts each (the Yes/No template's k prompts of one
    request, which share the head and the history) instead of --batch_size."""
    torch = self._torch
    out = []
    ids = torch.tensor(self.label_ids, device=self.device)
    pad = self.tokenizer.pad_token_id
    step = group or self.batch_size
    for start in range(0, len(prompts), step):
      enc = self.tokenizer(prompts[start:start + step])["input_ids"]
      self.prompt_tokens += sum(len(e) for e in enc)
      prefix = common_prefix(enc) if self.share_prefix and len(enc) > 1 else 0
      with torch.inference_mode():
        logits = label_logits(self.lm, enc, pad, prefix, self.device)
      out.append(logits[:, ids].float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(self.label_ids)), np.float32)

  def label(self, requests: RequestShard, shard: str = "") -> LabelShard:
    del shard
    prompts = self.renderer.render(requests.history, requests.candidates)
    if self.renderer.per_request > 1:  # Yes/No: one forward per request over its k prompts
      scores = yesno_label_scores(self.scores(prompts, self.k), self.k)
    else:
      scores = self.scores(prompts)
    choice, logprobs = choose(scores, self.none_option)
    return LabelShard(choice, np.ones(len(choice), bool), logprobs)
