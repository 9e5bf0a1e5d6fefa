"""python -m llm_labeler.tune --env=ENV_DIR --model=PATH --out=ADAPTER_DIR [...]

LoRA-tunes the labeling model on logged interactions of the env's *train* split (paper Sec.
5.1: "we first tune the LLM with LoRA (PEFT) on 1000 randomly sampled interactions"). Each
example is a Table 1 prompt rendered by the labeler's own PromptRenderer: the last --history
items before a logged interaction, k candidates with the true next item at a uniformly random
letter among sampled negatives (--negatives), or, for --none_frac of the prompts, negatives
only with the target "None" (jaxrec.labeling.heldout). The loss is the cross-entropy of the
label token at the end of the prompt, and the forward pass computes logits there only
(logits_to_keep=1): the vocabulary projection at every other position, most of a small
model's training cost, is never computed. --history and --k shorten the prompt on CPUs.
--warmup and --schedule shape the learning rate (linear warm-up, then constant or a linear or
cosine decay); --orders shows each example in several rotations of its candidates within its
step, so the targets of a step spread over the letters. --layers puts LoRA on a range of
decoder layers only (the layers below run without a backward
pass). --val_num sets more train-split interactions aside and scores them every --val_every
steps (loss against the label prior's entropy, hit@1, the largest label share, and how much the
label distribution moves from prompt to prompt), so a tune that learnt only the label prior, or
answers every prompt alike, shows it without touching the test split.

--template=yesno-v1 --loss=listwise tunes for the Yes/No template instead (llm_labeler.prompts):
each example is k prompts, one per candidate, that share the head and the history (one
forward per example, the shared part run once); candidate j scores logit(Yes) - logit(No),
"None" 0, and the loss is the cross-entropy of the target over those k + 1 scores, exactly
the label probabilities the labeler reads (`base.yesno_label_scores`). The model then answers
about one item at a time instead of binding a letter to an item among k.

ADAPTER_DIR (peft's files + manifest.json, llm_labeler.lora) appears only when training is
complete: it is written to a temp directory beside it and renamed. Until then the state of
training (LoRA weights, AdamW moments, step, loss curve; safetensors + JSON, no pickle) is
checkpointed every --save_every steps into `.ADAPTER_DIR.tune-ckpt` beside it; rerunning the
same command resumes there. SIGTERM saves a checkpoint after the step in flight and exits 143.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import tempfile
import time

import numpy as np

from jaxrec import cli, config, faults
from jaxrec.config import option
from jaxrec.errors import ConfigError, DataError
from jaxrec.io import atomic_open, atomic_write_text
from llm_labeler import lora
from llm_labeler.prompts import TEMPLATE_VERSION, YESNO_TEMPLATE_VERSION

# Flags that do not change the result: a checkpoint resumes under other values of these.
_RUN_ONLY = ("out", "log_every", "save_every", "threads", "val_every", "device")


@dataclasses.dataclass(frozen=True)
class TuneConfig:
  env: str = option("", "env directory: tuning prompts from its train split")
  model: str = option("", "base model: local directory or .gguf file")
  out: str = option("", "adapter directory to write (appears when complete)")
  num: int = option(1000, "tuning examples (logged interactions of the train split)")
  k: int = option(10, "candidates per prompt")
  history: int = option(10, "history items shown per prompt")
  none_frac: float = option(0.1, "share of prompts whose candidates exclude the true item "
                            "(target None), in [0, 1)")
  negatives: str = option("random", "negative candidates: uniform or popularity-weighted",
                          choices=("random", "popular"))
  rank: int = option(8, "LoRA rank")
  alpha: float = option(16.0, "LoRA alpha")
  targets: str = option("q_proj,v_proj", "comma-separated modules LoRA adapts")
  layers: str = option("", "decoder layers LoRA adapts, FIRST-LAST (e.g. 15-29; empty: all): "
                       "layers below the first run without a backward pass")
  lr: float = option(1e-3, "AdamW learning rate (the peak, with --warmup / --schedule)")
  warmup: int = option(0, "steps of linear warm-up from lr / warmup to lr")
  schedule: str = option("constant", "the learning rate after the warm-up: constant, or a "
                         "linear or cosine decay towards 0 at the last step",
                         choices=("constant", "linear", "cosine"))
  orders: int = option(1, "candidate orders each example is shown in within its step "
                       "(rotations as --permutations draws them, the target letter moving "
                       "with its item): a step's targets spread over `orders` letters, so a "
                       "per-letter bias earns less gradient than the choice; each example's "
                       "orders share their head and history (--share_prefix)")
  loss: str = option("vocab", "label-token cross-entropy over the whole vocabulary, or over "
                     "the k + 1 label tokens only (the labeler's own normalisation); "
                     "listwise: the Yes/No template's (cross-entropy of the true candidate "
                     "over the k candidates' log-odds and None's 0)",
                     choices=("vocab", "labels", "listwise"))
  template: str = option(TEMPLATE_VERSION, "prompt template: table1-v2 (one letter among k) "
                         "or yesno-v1 (one Yes/No prompt per candidate; --loss=listwise)",
                         choices=(TEMPLATE_VERSION, YESNO_TEMPLATE_VERSION))
  share_prefix: bool = option(True, "run the prompt head all prompts share once per step "
                              "(same loss and gradient, fewer tokens)")
  epochs: int = option(1, "passes over the examples")
  batch_size: int = option(8, "prompts per step")
  chat_template: bool = option(False, "wrap prompts in the tokenizer's chat template")
  seed: int = option(0, "examples, their order and the LoRA init")
  threads: int = option(0, "torch threads (0 = torch's default)")
  device: str = option("cpu", "torch device (cpu, cuda, cuda:N); a checkpoint resumes on any")
  val_num: int = option(0, "validation examples: more interactions of the train split, "
                        "disjoint from the tuning examples, scored every --val_every steps")
  val_every: int = option(25, "steps between validation passes (and after the last step)")
  log_every: int = option(5, "steps between progress lines")
  save_every: int = option(25, "steps between checkpoints")

  def validate(self) -> None:
    if self.warmup < 0:
      raise ConfigError(f"--warmup must be >= 0, got {self.warmup}")
    if not 1 <= self.orders <= self.k:
      raise ConfigError(f"--orders must be in 1..k={self.k}, got {self.orders}")
    if self.template not in (TEMPLATE_VERSION, YESNO_TEMPLATE_VERSION):
      raise ConfigError(f"--template must be {TEMPLATE_VERSION} or {YESNO_TEMPLATE_VERSION}, "
                        f"got {self.template!r}")
    if (self.template == YESNO_TEMPLATE_VERSION) != (self.loss == "listwise"):
      raise ConfigError(f"--template={YESNO_TEMPLATE_VERSION} trains with --loss=listwise and "
                        f"--loss=listwise needs it; got --template={self.template} "
                        f"--loss={self.loss}")
    if self.template == YESNO_TEMPLATE_VERSION and self.orders != 1:
      raise ConfigError(f"--orders={self.orders}: the {YESNO_TEMPLATE_VERSION} template shows "
                        "one candidate per prompt, there is no order to rotate")
    if not self.env or not self.model or not self.out:
      raise ConfigError("--env, --model and --out are required")
    if not 0.0 <= self.none_frac < 1.0:
      raise ConfigError(f"--none_frac must be in [0, 1), got {self.none_frac}")
    for f in ("num", "history", "rank", "epochs", "batch_size", "log_every", "save_every",
              "val_every"):
      if getattr(self, f) < 1:
        raise ConfigError(f"--{f} must be positive, got {getattr(self, f)}")
    if self.lr <= 0 or self.alpha <= 0 or self.threads < 0:
      raise ConfigError("--lr and --alpha must be positive, --threads >= 0")
    if not 2 <= self.k <= 25:
      raise ConfigError(f"--k must be in 2..25, got {self.k}")
    if self.val_num < 0:
      raise ConfigError(f"--val_num must be >= 0, got {self.val_num}")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", self.device):
      raise ConfigError(f"--device must be cpu, cuda or cuda:N, got {self.device!r}")
    layer_range(self.layers)

  def result_flags(self) -> dict:
    """The flags a checkpoint must agree on to resume; paths as absolute paths, so a rerun
    from another directory or with a relative path resumes the same tune."""
    flags = {k: v for k, v in dataclasses.asdict(self).items() if k not in _RUN_ONLY}
    return flags | {k: os.path.abspath(flags[k]) for k in ("env", "model")}


def layer_range(layers: str) -> list[int] | None:
  """--layers "FIRST-LAST" -> [FIRST, ..., LAST]; "" -> None (every layer)."""
  if not layers:
    return None
  first, sep, last = layers.partition("-")
  if not sep or not first.isdigit() or not last.isdigit() or int(first) > int(last):
    raise ConfigError(f"--layers must be FIRST-LAST with FIRST <= LAST (e.g. 15-29), got "
                      f"{layers!r}")
  return list(range(int(first), int(last) + 1))


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
  """The multiple of --lr for optimizer step `step` (0-based) of `total`: (step + 1) / warmup
  during the first `warmup` steps, then 1 ("constant") or a linear or cosine decay over the
  remaining steps, from 1 at the first of them towards 0 after the last (never 0 itself)."""
  if step < warmup:
    return (step + 1) / warmup
  if schedule == "constant":
    return 1.0
  progress = (step - warmup) / max(total - warmup, 1)
  if schedule == "linear":
    return 1.0 - progress
  if schedule == "cosine":
    return 0.5 * (1.0 + math.cos(math.pi * progress))
  raise ConfigError(f"--schedule must be constant, linear or cosine, got {schedule!r}")


def in_orders(ex, orders: int):
  """Examples [N] -> Examples [N * orders]: row n * orders + p is example n with its
  candidates rotated by `debias.shifts(k, orders)[p]` (p = 0: as drawn); a shown target's
  letter moves with its item, None stays None. orders = 1: ex itself."""
  if orders == 1:
    return ex
  from llm_labeler import debias
  k = ex.candidates.shape[1]
  rows = []
  for s in debias.shifts(k, orders):
    order = debias.rotation(k, s)  # letter j shows candidate order[j]
    target = np.where(ex.target < k, (ex.target - s) % k, ex.target)
    rows.append(ex._replace(candidates=ex.candidates[:, order],
                            target=target.astype(ex.target.dtype)))
  return type(ex)(*(np.stack(f, 1).reshape(-1, *f[0].shape[1:]) for f in zip(*rows)))


def checkpoint_dir(out: str) -> str:
  out = os.path.abspath(out)
  return os.path.join(os.path.dirname(out), f".{os.path.basename(out)}.tune-ckpt")


def train_examples(cfg: TuneConfig):
  """(tuning Examples, validation Examples or None, catalog), all from the env's train split;
  checked before any model is loaded. --val_num > 0 draws num + val_num distinct interactions
  and sets val_num of them aside (`split_validation`)."""
  from jaxrec.labeling import heldout_examples
  ex, catalog = heldout_examples(cfg.env, "train", num=cfg.num + cfg.val_num, k=cfg.k,
                                 history_len=cfg.history, none_frac=cfg.none_frac,
                                 negatives=cfg.negatives, seed=cfg.seed)
  train, val = split_validation(ex, cfg.val_num, cfg.seed)
  return train, val, catalog


def split_validation(ex, val_num: int, seed: int):
  """(tuning rows, validation rows) of Examples: a seeded draw of val_num rows set aside; the
  two never share a row (each row is a distinct logged interaction). val_num = 0: (ex, None)."""
  if not val_num:
    return ex, None
  perm = np.random.default_rng([seed, 4]).permutation(len(ex.target))
  val, train = np.sort(perm[:val_num]), np.sort(perm[val_num:])
  return type(ex)(*(f[train] for f in ex)), type(ex)(*(f[val] for f in ex))


def target_entropy(target: np.ndarray, k: int) -> float:
  """Entropy (nats) of the targets' own distribution over the k + 1 labels: the loss of a
  model that learnt the label prior and nothing about the prompt."""
  p = np.bincount(target, minlength=k + 1) / len(target)
  p = p[p > 0]
  return float(-(p * np.log(p)).sum())


def evaluate(model, enc, target, label_ids, loss: str, pad: int, prefix: int,
             batch_size: int, device=None) -> dict:
  """Validation on encoded prompts: the mean loss; hit@1 of the argmax over the k + 1 labels
  (the labeler's choice); the largest share one label takes among the choices; and
  `prompt_spread`, the mean total-variation distance of each prompt's label distribution from
  their mean: 0 when the model answers every prompt alike (it learnt a prior, not a choice).
  loss="listwise" (Yes/No prompts, k per example): one forward per example over its k
  prompts, with their own shared head (`prefix` is not used)."""
  import torch

  from llm_labeler.backends import hf_backend
  from llm_labeler.backends.base import yesno_label_scores
  per = len(enc) // len(target)  # prompts per example: k for Yes/No, else 1
  step = per if loss == "listwise" else batch_size
  losses, scores = [], []
  with torch.no_grad():
    for s in range(0, len(enc), step):
      group = enc[s:s + step]
      pre = hf_backend.common_prefix(group) if loss == "listwise" else prefix
      logits = hf_backend.label_logits(model, group, pad, pre, device)
      t = target[s // per:(s + step) // per]
      losses.append(float(label_loss(logits, t, label_ids, loss)) * len(t))
      ids = torch.as_tensor(np.asarray(label_ids), device=logits.device)
      scores.append(logits[:, ids].double().cpu().numpy())
  scores = np.concatenate(scores)
  if loss == "listwise":
    scores = yesno_label_scores(scores, per)
  return {"loss": sum(losses) / len(target)} | label_stats(scores, target)


def label_stats(scores: np.ndarray, target: np.ndarray) -> dict:
  """hit@1, largest label share and prompt spread (see `evaluate`) of label scores [N, k+1]."""
  from llm_labeler.backends.base import choose
  choice, logprobs = choose(scores)
  p = np.exp(logprobs.astype(np.float64))
  return {"hit_at_1": float((choice == target).mean()),
          "label_share_max": float(np.bincount(choice, minlength=p.shape[1]).max() / len(choice)),
          "prompt_spread": float(0.5 * np.abs(p - p.mean(0)).sum(1).mean())}


def render(cfg: TuneConfig, ex, catalog, tokenizer) -> tuple[list[str], np.ndarray]:
  """(prompts, label token ids) by the labeler's PromptRenderer. Table 1: N prompts and the
  k + 1 label tokens, example n's target token label_ids[ex.target[n]]. Yes/No: N * k prompts
  (example n's candidate j at n * k + j) and the [Yes, No] answer tokens."""
  from llm_labeler.backends.base import answer_token_ids, label_token_ids
  from llm_labeler.prompts import PromptRenderer, chat_wrapper, letters, special_strings
  chat = chat_wrapper(tokenizer) if cfg.chat_template else None
  renderer = PromptRenderer(catalog, cfg.k, chat, special_strings(tokenizer), cfg.template)
  ids = np.asarray(answer_token_ids(tokenizer) if renderer.per_request > 1
                   else label_token_ids(tokenizer, letters(cfg.k)))
  return renderer.render(ex.history, ex.candidates), ids


def label_loss(logits, target, label_ids, loss: str = "vocab"):
  """Mean cross-entropy of the right label: logits [B, V] at the label position, target [B] in
  0..k (k = None), label_ids [k + 1] the label tokens. "vocab": softmax over the vocabulary
  (the format and the choice); "labels": softmax over the k + 1 label tokens only, the
  probabilities the labeler reads (llm_labeler.backends.base.choose), so every gradient step
  goes to which label, none to producing a label at all. "listwise" (the Yes/No template):
  logits [B * k, V] after each example's k prompts, label_ids [Yes, No]; candidate j scores
  logit(Yes) - logit(No), None 0 (`base.yesno_label_scores`), and the loss is the
  cross-entropy of the target over those k + 1 scores, the labeler's own label
  probabilities."""
  import torch
  target = torch.as_tensor(np.asarray(target), dtype=torch.long, device=logits.device)
  label_ids = torch.as_tensor(np.asarray(label_ids), dtype=torch.long, device=logits.device)
  if loss == "listwise":
    answers = logits[:, label_ids].float()
    s = (answers[:, 0] - answers[:, 1]).reshape(len(target), -1)
    return torch.nn.functional.cross_entropy(
        torch.cat([s, torch.zeros_like(s[:, :1])], dim=1), target)
  if loss == "labels":
    return torch.nn.functional.cross_entropy(logits[:, label_ids].float(), target)
  if loss == "vocab":
    return torch.nn.functional.cross_entropy(logits.float(), label_ids[target])
  raise ConfigError(f"--loss must be vocab or labels, got {loss!r}")


def _batches(num: int, batch_size: int, epochs: int, seed: int) -> list[np.ndarray]:
  """Example indices of every step: a seeded permutation per epoch, cut into batches."""
  out = []
  for e in range(epochs):
    perm = np.random.default_rng([seed, 3, e]).permutation(num)
    out += [perm[s:s + batch_size] for s in range(0, num, batch_size)]
  return out


def _save(ckpt: str, step: int, model, opt, state: dict) -> None:
  """One checkpoint: step-N.safetensors (LoRA weights + AdamW state), then state.json naming
  it (the commit), then older step files removed."""
  from peft import get_peft_model_state_dict
  from safetensors.torch import save
  os.makedirs(ckpt, exist_ok=True)
  tensors = {f"lora.{k}": v.detach().cpu().contiguous() for k, v in
             get_peft_model_state_dict(model).items()}
  for i, s in opt.state_dict()["state"].items():
    for key, v in s.items():
      tensors[f"opt.{i}.{key}"] = v.detach().cpu().reshape(v.shape).contiguous()
  name = f"step-{step:06d}.safetensors"
  with atomic_open(os.path.join(ckpt, name), "wb") as f:
    f.write(save(tensors))
  atomic_write_text(os.path.join(ckpt, "state.json"),
                    json.dumps(state | {"step": step, "file": name}) + "\n")
  for fn in os.listdir(ckpt):
    if fn.startswith("step-") and fn != name:
      os.unlink(os.path.join(ckpt, fn))


def _restore(ckpt: str, cfg: TuneConfig, model, opt) -> dict | None:
  """The checkpoint's state (weights and optimizer loaded), or None when there is none."""
  from peft import set_peft_model_state_dict
  from safetensors.torch import load_file
  path = os.path.join(ckpt, "state.json")
  if not os.path.isfile(path):
    return None
  try:
    with open(path) as f:
      state = json.load(f)
    tensors = load_file(os.path.join(ckpt, state["file"]))
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise DataError(f"{ckpt}: unreadable tune checkpoint ({type(e).__name__}); remove it to "
                    "start over") from None
  if state.get("flags") != cfg.result_flags():
    diff = sorted(k for k, v in cfg.result_flags().items() if state.get("flags", {}).get(k) != v)
    raise ConfigError(f"{ckpt}: a checkpoint of a run with other flags ({', '.join(diff)}); "
                      "rerun with those or remove it")
  set_peft_model_state_dict(model, {k[5:]: v for k, v in tensors.items() if k.startswith("lora.")})
  sd = opt.state_dict()
  sd["state"] = {}
  for k, v in tensors.items():
    if k.startswith("opt."):
      _, i, key = k.split(".", 2)
      sd["state"].setdefault(int(i), {})[key] = v
  opt.load_state_dict(sd)
  return state


def tune(cfg: TuneConfig, log=print) -> dict:
  """Trains (or resumes) and writes cfg.out; returns its manifest. See the module docstring."""
  cfg.validate()
  out = os.path.abspath(cfg.out)
  if os.path.exists(out):
    manifest = lora.read_manifest(out, "--out")
    log(f"{out}: already complete (rerun with another --out to tune again)")
    return manifest
  t_load = time.perf_counter()
  ex, val, catalog = train_examples(cfg)  # bad --env / --num refused before torch is imported
  try:
    import torch
    from peft import LoraConfig, get_peft_model
  except ImportError as e:
    raise ConfigError(f"llm_labeler.tune needs torch, transformers and peft (pip install -e "
                      f"'.[hf]'): {e}") from None
  from llm_labeler.backends import hf_backend
  if cfg.threads:
    torch.set_num_threads(cfg.threads)
  if cfg.device != "cpu" and not torch.cuda.is_available():
    raise ConfigError(f"--device={cfg.device}: torch sees no CUDA device here")
  device = torch.device(cfg.device)
  tokenizer, lm = hf_backend.load_model(cfg.model, "float32")
  base = {"path": os.path.abspath(cfg.model), "weights_sha256": lora.weights_sha256(lm),
          "class": type(lm).__name__}
  shown = in_orders(ex, cfg.orders)  # prompt n * orders + p: example n in order p
  prompts, label_ids = render(cfg, shown, catalog, tokenizer)
  # Prompts per example: its orders, or its k Yes/No prompts (one per candidate).
  per = len(prompts) // len(ex.target)
  enc = [tokenizer.encode(p, add_special_tokens=True) for p in prompts]
  val_enc = ([tokenizer.encode(p, add_special_tokens=True)
              for p in render(cfg, val, catalog, tokenizer)[0]] if val is not None else [])
  prefix = hf_backend.common_prefix(enc + val_enc) if cfg.share_prefix else 0
  prior = target_entropy(ex.target, cfg.k)
  log(f"loaded {cfg.model} and rendered {len(enc)} train-split prompts (+{len(val_enc)} "
      f"validation) in {time.perf_counter() - t_load:.1f}s (mean "
      f"{np.mean([len(e) for e in enc]):.0f} tokens, target None in "
      f"{(ex.target == cfg.k).mean():.1%}, the targets' entropy {prior:.4f}: the loss of the "
      f"label prior alone; {prefix} shared head tokens run once per step; each example in "
      f"{cfg.orders} order(s))")
  torch.manual_seed(cfg.seed)
  model = get_peft_model(lm, LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=0.0,
                                        target_modules=cfg.targets.split(","),
                                        layers_to_transform=layer_range(cfg.layers),
                                        task_type="CAUSAL_LM"))
  model.to(device)
  model.train()
  opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                          weight_decay=0.0)
  ckpt = checkpoint_dir(out)
  state = (_restore(ckpt, cfg, model, opt)
           or {"step": 0, "losses": [], "seconds": 0.0, "validation": []})
  batches = _batches(cfg.num, cfg.batch_size, cfg.epochs, cfg.seed)
  if state["step"]:
    log(f"resumed from {ckpt} at step {state['step']}/{len(batches)}")
  state["flags"] = cfg.result_flags()
  pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
  state.setdefault("validation", [])
  val_seconds = [0.0]  # validation time, left out of the training rates

  def validate(step):
    if not val_enc or any(v["step"] == step for v in state["validation"]):
      return
    t = time.perf_counter()
    v = {"step": step} | evaluate(model, val_enc, val.target, label_ids, cfg.loss, pad, prefix,
                                  cfg.batch_size, device)
    state["validation"].append(v)
    log(f"validation at step {step}: loss {v['loss']:.4f} (label prior "
        f"{target_entropy(val.target, cfg.k):.4f}), hit@1 {v['hit_at_1']:.3f}, largest label "
        f"share {v['label_share_max']:.3f}, prompt spread {v['prompt_spread']:.3f} "
        f"({len(val_enc)} prompts, {time.perf_counter() - t:.0f}s)")
    val_seconds[0] += time.perf_counter() - t

  t0, done_examples, tokens = time.perf_counter(), 0, 0
  with faults.Preemption() as preemption:
    for step in range(state["step"], len(batches)):
      idx = batches[step]
      # One forward over the batch; with --orders (or Yes/No prompts), one per example over
      # its orders (its k prompts), which share the head and the history (their own, longer
      # prefix); gradients accumulate.
      groups = [idx] if per == 1 else [np.arange(i * per, (i + 1) * per) for i in idx]
      n = sum(len(g) for g in groups)
      opt.zero_grad(set_to_none=True)
      value = 0.0
      for g in groups:
        g_enc = [enc[i] for i in g]
        g_prefix = (prefix if per == 1 or not cfg.share_prefix
                    else hf_backend.common_prefix(g_enc))
        logits = hf_backend.label_logits(model, g_enc, pad, g_prefix, device)
        # Yes/No: the group's k prompts are one example, whose target is ex.target.
        target = ex.target[g[:1] // per] if cfg.loss == "listwise" else shown.target[g]
        loss = label_loss(logits, target, label_ids, cfg.loss) * (len(g) / n)
        loss.backward()
        value += float(loss.detach())
      for group in opt.param_groups:
        group["lr"] = cfg.lr * lr_factor(step, len(batches), cfg.warmup, cfg.schedule)
      opt.step()
      if not math.isfinite(value):
        raise DataError(f"--lr={cfg.lr}: the loss is {value} at step {step + 1}; lower --lr")
      state["losses"].append(value)
      state["step"] = step + 1
      done_examples += len(idx)
      tokens += sum(len(enc[i]) for g in groups for i in g)
      dt = time.perf_counter() - t0 - val_seconds[0]
      last = step + 1 == len(batches)
      if (step + 1) % cfg.log_every == 0 or last:
        rate = done_examples / dt
        left = sum(len(b) for b in batches[step + 1:])
        log(f"step {step + 1}/{len(batches)} loss {np.mean(state['losses'][-cfg.log_every:]):.4f}"
            f" | {rate:.3g} examples/s, {tokens / dt:.4g} tokens/s, ETA {left / rate:.0f}s")
      if (step + 1) % cfg.val_every == 0 or last:
        validate(step + 1)
      if preemption.requested or (step + 1) % cfg.save_every == 0:
        _save(ckpt, step + 1, model, opt,
              state | {"seconds": state["seconds"] + time.perf_counter() - t0})
        if preemption.requested:
          raise faults.Preempted(f"{ckpt}: tuning stopped after step {step + 1} (checkpoint "
                                 "saved); rerun the same command to resume")
  seconds = state["seconds"] + time.perf_counter() - t0
  trained = sum(len(b) for b in batches)
  manifest = {
      "kind": "jaxrec-lora", "base_model": base, "tokenizer_sha256": lora.tokenizer_sha256(tokenizer),
      "template_version": cfg.template, "k": cfg.k, "chat_template": cfg.chat_template,
      "history": cfg.history, "dataset": {"name": catalog.dataset, "fingerprint":
                                          catalog.fingerprint, "env": os.path.abspath(cfg.env),
                                          "split": "train"},
      "flags": dataclasses.asdict(cfg), "steps": len(batches), "examples_seen": trained,
      "prompts_seen": trained * per,
      "loss_curve": state["losses"], "target_entropy": prior,
      "validation": state.get("validation", []), "seconds": round(seconds, 2),
      "validation_seconds": round(val_seconds[0], 2),
      "examples_per_s": round(done_examples / max(time.perf_counter() - t0 - val_seconds[0],
                                                  1e-9), 4)}
  tmp = tempfile.mkdtemp(prefix=f".tmp-{os.path.basename(out)}-", dir=os.path.dirname(out))
  try:
    model.save_pretrained(tmp)
    lora.write_manifest(tmp, manifest)
    os.rename(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  shutil.rmtree(ckpt, ignore_errors=True)
  log(f"wrote {out}: loss {np.mean(state['losses'][:cfg.log_every]):.4f} (first "
      f"{cfg.log_every} steps) -> {np.mean(state['losses'][-cfg.log_every:]):.4f} (last), "
      f"{len(batches)} steps in {seconds:.0f}s")
  return lora.read_manifest(out, "--out")


def main(argv):
  cli.reject_extra_args(argv)
  tune(config.from_flags(TuneConfig), log=lambda s: print(s, flush=True))


if __name__ == "__main__":
  # Flags are defined only when run as the program: the library shares a process with
  # label's and label_quality's flags in tests, and some names (batch_size) differ in default.
  config.define_flags(TuneConfig)
  cli.run(main)
