"""The `vllm` backend: offline `vllm.LLM.generate` over whole shards (the production labeler).

Each prompt gets one output token, greedy (temperature 0) and constrained to the k + 1 label
tokens, with the log-probabilities of exactly those tokens returned (`logprob_token_ids`) and
normalised over them into a soft preference. Two constraints are available:
  tokens  `allowed_token_ids` = the label tokens (exact, no grammar engine; the default);
  choice  `StructuredOutputsParams(choice=labels)` (vLLM's structured outputs).
Prefix caching is on: every prompt of a dataset shares the long instruction prefix, so after
the first batch only the history and candidates are prefilled. The Yes/No template asks k
prompts per request, constrained to the two answer tokens; each candidate scores
logprob(Yes) - logprob(No) and the choice is the argmax with "None" at 0
(`base.yesno_label_scores`); a request's k prompts differ in the candidate only, so prefix
caching prefills its history once. vLLM is imported here only.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from jaxrec.errors import ConfigError
from jaxrec.shards import Catalog, LabelShard, RequestShard
from llm_labeler.backends.base import (answer_token_ids, choose, label_token_ids,
                                       yesno_label_scores)
from llm_labeler.parse import Parser
from llm_labeler.prompts import (TEMPLATE_VERSION, PromptRenderer, chat_wrapper, has_none,
                                 letters, special_strings)

CONSTRAINTS = ("tokens", "choice")


@dataclasses.dataclass(frozen=True)
class VLLMConfig:
  model: str = ""  # local directory (or a name the host's HF cache already holds)
  lora_path: str = ""
  tensor_parallel_size: int = 1
  max_num_seqs: int = 256
  dtype: str = "auto"
  gpu_memory_utilization: float = 0.9
  max_model_len: int = 0  # 0 = the model's
  enable_prefix_caching: bool = True
  enforce_eager: bool = False  # skip torch.compile / graph capture (fast start, CPU tests)
  constraint: str = "tokens"
  chat_template: bool = False
  seed: int = 0

  def validate(self) -> None:
    if not self.model:
      raise ConfigError("--model is required for --backend=vllm")
    if self.constraint not in CONSTRAINTS:
      raise ConfigError(f"--constraint must be one of {', '.join(CONSTRAINTS)}")
    if self.lora_path and not os.path.isdir(self.lora_path):
      raise ConfigError(f"--lora_path {self.lora_path!r}: no such directory")
    if not 0.0 < self.gpu_memory_utilization <= 1.0:
      raise ConfigError("--gpu_memory_utilization must be in (0, 1]")
    for f in ("tensor_parallel_size", "max_num_seqs"):
      if getattr(self, f) <= 0:
        raise ConfigError(f"--{f} must be positive")


class VLLMBackend:
  name = "vllm"

  def __init__(self, cfg: VLLMConfig, catalog: Catalog, k: int,
               template: str = TEMPLATE_VERSION):
    cfg.validate()
    import vllm
    from vllm.sampling_params import StructuredOutputsParams
    kwargs = {}
    if cfg.max_model_len:
      kwargs["max_model_len"] = cfg.max_model_len
    if cfg.lora_path:
      kwargs["enable_lora"] = True
    self.llm = vllm.LLM(model=cfg.model, tensor_parallel_size=cfg.tensor_parallel_size,
                        max_num_seqs=cfg.max_num_seqs, dtype=cfg.dtype,
                        gpu_memory_utilization=cfg.gpu_memory_utilization,
                        enable_prefix_caching=cfg.enable_prefix_caching,
                        enforce_eager=cfg.enforce_eager, seed=cfg.seed,
                        **kwargs)
    tokenizer = self.llm.get_tokenizer()
    chat = chat_wrapper(tokenizer) if cfg.chat_template else None
    self.renderer = PromptRenderer(catalog, k, chat, special_strings(tokenizer), template)
    self.k = k
    self.yesno = self.renderer.per_request > 1
    # The constraint below depends on the tokenizer and k only: item text cannot widen it.
    # Yes/No template: the two answer tokens of each of a request's k prompts.
    self.label_ids = (answer_token_ids(tokenizer) if self.yesno
                      else label_token_ids(tokenizer, letters(k)))
    self.none_option = has_none(template)
    self.parser = Parser(k)
    # A template without "None" (LEA's) allows only the k candidate labels.
    allowed = self.label_ids if self.none_option or self.yesno else self.label_ids[:k]
    if cfg.constraint == "tokens":
      constraint = {"allowed_token_ids": allowed}
    else:  # the same token as text: " a", so the choice strings carry the space
      constraint = {"structured_outputs": StructuredOutputsParams(
          choice=[tokenizer.decode([i]) for i in allowed])}
    self.sampling = vllm.SamplingParams(max_tokens=1, temperature=0.0,
                                        logprob_token_ids=self.label_ids, **constraint)
    self.lora = None
    if cfg.lora_path:
      from vllm.lora.request import LoRARequest
      self.lora = LoRARequest("labeler", 1, os.path.abspath(cfg.lora_path))
    self.cfg = cfg
    self.model = cfg.model + (f" + LoRA {cfg.lora_path}" if cfg.lora_path else "")
    self.meta = {"vllm": dataclasses.asdict(cfg), "vllm_version": vllm.__version__,
                 "label_token_ids": self.label_ids}
    self.prompt_tokens = 0

  def label(self, requests: RequestShard, shard: str = "") -> LabelShard:
    del shard
    prompts = self.renderer.render(requests.history, requests.candidates)
    outs = self.llm.generate(prompts, self.sampling, lora_request=self.lora, use_tqdm=False)
    scores = np.full((len(outs), len(self.label_ids)), -np.inf, np.float64)
    texts = []
    for i, out in enumerate(outs):
      self.prompt_tokens += len(out.prompt_token_ids)
      comp = out.outputs[0]
      texts.append(comp.text)
      step = comp.logprobs[0] if comp.logprobs else {}
      for j, tid in enumerate(self.label_ids):
        if tid in step:
          scores[i, j] = step[tid].logprob
    if self.yesno:  # the choice is the argmax of the candidates' log-odds and None's 0
      valid = np.isfinite(scores).all(axis=1).reshape(-1, self.k).all(axis=1)
      choice, logprobs = choose(yesno_label_scores(scores, self.k), self.none_option)
      return LabelShard(choice, valid, logprobs)
    # The choice is what the model wrote (under the constraint: the argmax label token); a
    # parse failure (e.g. an unexpected detokenisation) is counted, never guessed.
    choice, valid = self.parser(texts)
    _, logprobs = choose(scores, self.none_option)
    return LabelShard(choice, valid, logprobs)
