"""python -m experiments.label_quality --env=ENV_DIR --out=FILE.json [--backend=hf --model=PATH
    --lora=ADAPTER --permutations=4 --num=1000 --k=10]

How good are a labeler's labels? On held-out interactions of the env's *test* split (never the
tuning data, which comes from the train split; jaxrec.labeling.heldout), each prompt shows k
candidates with the true next item at a uniformly random letter (or, for --none_frac, not at
all: the right label is then "None"). Per labeler ("row"):
  hit_at_1          share of prompts whose chosen label is the right one
  p_true            mean probability of the right label
  ece               expected calibration error of the chosen label's probability (10 bins)
  none_rate         share of "None" choices
  letter_share_max  the largest share of one label among the choices (a model that always
                    answers "a" has 1.0; a position-free one about 1/k)
  agree_oracle      share of prompts where it chose what the oracle judge chose
Rows: random (uniform over the k candidates), popularity (the candidate with most train-split
interactions; probabilities proportional to count + 1), oracle (the simulated judge on the
train user model), and with --backend=hf --model: untuned, plus with --lora: tuned and, when
--permutations > 1, tuned_debiased. --template=yesno-v1 (the default with a Yes/No adapter)
asks the model rows one Yes/No prompt per candidate (llm_labeler.prompts): the candidate
with the largest log-odds is chosen, "None" when every candidate gets a No; it has no
letters, so no tuned_debiased row, and letter_share_max is then the largest share of one
candidate position. Writes FILE.json ({"rows": {name: metrics}, "k", "num",
...}) and FILE.md (the table), both atomically, and prints the table.
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np

from jaxrec import cli, config
from jaxrec.config import option
from jaxrec.errors import ConfigError
from jaxrec.io import atomic_write_text

METRICS = ("hit_at_1", "p_true", "ece", "none_rate", "letter_share_max", "agree_oracle")


@dataclasses.dataclass(frozen=True)
class QualityConfig:
  env: str = option("", "env directory: prompts from its test split")
  out: str = option("", "JSON file to write (and the table beside it as .md)")
  backend: str = option("none", "model rows: hf, or none for the references only",
                        choices=("none", "hf"))
  model: str = option("", "hf: local model directory or .gguf file")
  lora: str = option("", "hf: adapter directory of llm_labeler.tune (tuned rows)")
  permutations: int = option(4, "tuned_debiased: candidate orders averaged (1 = no such row)")
  template: str = option("", "model rows' prompt: '' = the adapter's (--lora), else table1-v2; "
                         "or yesno-v1 (one Yes/No prompt per candidate)")
  num: int = option(1000, "held-out prompts")
  k: int = option(10, "candidates per prompt")
  history: int = option(0, "history items shown (0: the adapter's tuning window, else 10)")
  none_frac: float = option(0.0, "share of prompts without the true item (right label None)")
  negatives: str = option("random", "negative candidates", choices=("random", "popular"))
  batch_size: int = option(16, "hf: prompts per forward pass")
  chat_template: bool = option(False, "wrap prompts in the tokenizer's chat template")
  threads: int = option(0, "torch threads (0 = torch's default)")
  seed: int = option(1, "which held-out interactions and negatives")

  def validate(self) -> None:
    if not self.env or not self.out:
      raise ConfigError("--env and --out are required")
    if self.backend == "hf" and not self.model:
      raise ConfigError("--backend=hf needs --model")
    if self.lora and self.backend != "hf":
      raise ConfigError("--lora needs --backend=hf")
    if self.permutations < 1 or self.history < 0 or self.threads < 0:
      raise ConfigError("--permutations must be >= 1, --history and --threads >= 0")
    from llm_labeler.prompts import TEMPLATE_VERSION, YESNO_TEMPLATE_VERSION
    if self.template not in ("", TEMPLATE_VERSION, YESNO_TEMPLATE_VERSION):
      raise ConfigError(f"--template must be empty, {TEMPLATE_VERSION} or "
                        f"{YESNO_TEMPLATE_VERSION}, got {self.template!r}")


def model_template(cfg: QualityConfig) -> str:
  """The model rows' template: --template, else the adapter's, else Table 1."""
  from llm_labeler.prompts import TEMPLATE_VERSION
  if cfg.template or not cfg.lora:
    return cfg.template or TEMPLATE_VERSION
  from llm_labeler import lora
  return lora.read_manifest(cfg.lora)["template_version"]


def metrics(choice: np.ndarray, probs: np.ndarray, target: np.ndarray,
            oracle_choice: np.ndarray | None = None, bins: int = 10) -> dict:
  """choice [N] in 0..k, probs [N, k+1] (rows sum to 1), target [N] in 0..k -> the metrics."""
  n, k1 = probs.shape
  correct = choice == target
  conf = probs[np.arange(n), choice]
  which = np.minimum((conf * bins).astype(int), bins - 1)
  ece = sum(abs(correct[which == b].mean() - conf[which == b].mean()) * (which == b).mean()
            for b in range(bins) if (which == b).any())
  share = np.bincount(choice, minlength=k1) / n
  return {"hit_at_1": float(correct.mean()), "p_true": float(probs[np.arange(n), target].mean()),
          "ece": float(ece), "none_rate": float((choice == k1 - 1).mean()),
          "letter_share_max": float(share.max()), "letter_share": [round(float(s), 4) for s in share],
          "agree_oracle": None if oracle_choice is None else float((choice == oracle_choice).mean())}


def random_row(n: int, k: int, seed: int):
  probs = np.zeros((n, k + 1))
  probs[:, :k] = 1.0 / k
  return np.random.default_rng([seed, 5]).integers(0, k, n).astype(np.int32), probs


def popularity_row(candidates: np.ndarray, popularity: np.ndarray):
  w = popularity[candidates].astype(np.float64) + 1.0
  probs = np.concatenate([w / w.sum(1, keepdims=True), np.zeros((len(w), 1))], axis=1)
  return np.argmax(w, axis=1).astype(np.int32), probs


def table(result: dict) -> str:
  head = "| labeler | " + " | ".join(METRICS) + " |\n|---|" + "---|" * len(METRICS) + "\n"
  fmt = lambda v: "n/a" if v is None else f"{v:.3f}"
  return head + "".join(f"| {name} | " + " | ".join(fmt(r[m]) for m in METRICS) + " |\n"
                        for name, r in result["rows"].items())


def run(cfg: QualityConfig, log=print) -> dict:
  from jaxrec import shards
  from jaxrec.labeling import catalog_of_env
  from jaxrec.labeling.heldout import ExampleConfig, make_examples, splits_of_env
  cfg.validate()
  history = cfg.history
  if cfg.lora and not history:
    from llm_labeler import lora
    history = int(lora.read_manifest(cfg.lora).get("history", 10))
  history = history or 10
  train, test, ds = splits_of_env(cfg.env)
  env_hist = _env_history(cfg.env)
  # One window long enough for both: the prompt shows its last `history` items, the oracle
  # judges on the env's own window.
  ex = make_examples(test, ds.num_items, train.item_popularity(), ExampleConfig(
      num=cfg.num, k=cfg.k, history_len=max(history, env_hist), none_frac=cfg.none_frac,
      negatives=cfg.negatives, seed=cfg.seed))
  n = cfg.num
  req = shards.RequestShard(np.arange(n, dtype=np.int32), np.zeros(n, np.int32),
                            ex.history[:, -history:], ex.candidates, np.full(n, -1, np.int32))
  labels = {"random": random_row(n, cfg.k, cfg.seed),
            "popularity": popularity_row(ex.candidates, train.item_popularity())}
  timing = {}
  try:
    from jaxrec.labeling import make_oracle_backend
    from jaxrec.oracle_config import OracleConfig
    oreq = req._replace(history=ex.history[:, -env_hist:])
    lab = make_oracle_backend(cfg.env, OracleConfig(), cfg.seed).label(oreq, "label_quality")
    labels["oracle"] = (lab.choice, np.exp(lab.logprobs.astype(np.float64)))
  except Exception as e:  # noqa: BLE001 - e.g. a matrix env whose users are not the test's
    log(f"oracle row skipped ({type(e).__name__}: {e})")
  if cfg.backend == "hf":
    labels.update(_model_rows(cfg, req, catalog_of_env(cfg.env), timing, log))
  oracle_choice = labels["oracle"][0] if "oracle" in labels else None
  rows = {}
  for name, (choice, probs) in labels.items():
    rows[name] = metrics(choice, probs / probs.sum(1, keepdims=True), ex.target, oracle_choice)
    rows[name].update(timing.get(name, {}))
  result = {"env": os.path.abspath(cfg.env), "split": "test", "k": cfg.k, "num": n,
            "history": history, "none_frac": cfg.none_frac, "negatives": cfg.negatives,
            "seed": cfg.seed, "model": cfg.model, "lora": cfg.lora,
            "permutations": cfg.permutations,
            "template": model_template(cfg) if cfg.backend == "hf" else None, "rows": rows}
  result["table"] = table(result)
  cli.emit_json(result, cfg.out)
  atomic_write_text(os.path.splitext(cfg.out)[0] + ".md", result["table"])
  log(result["table"])
  return result


def _env_history(env_dir: str) -> int:
  from jaxrec.envs import build
  return build.load_env(env_dir, "train")[0].history_len


def timing_row(requests: int, orders: int, per_request: int, tokens: int, seconds: float) -> dict:
  """A model row's rates: `requests` labeled in `seconds`, each shown in `orders` candidate
  orders (--permutations) as `per_request` prompts per order (k for the Yes/No template)."""
  return {"seconds": round(seconds, 2), "requests_per_s": round(requests / seconds, 4),
          "prompts_per_s": round(requests * per_request / seconds, 4),
          "forward_prompts_per_s": round(requests * per_request * orders / seconds, 4),
          "prompt_tokens_per_s": round(tokens / seconds, 1)}


def _model_rows(cfg: QualityConfig, req, catalog, timing: dict, log) -> dict:
  from llm_labeler.backends.hf_backend import HFBackend
  from llm_labeler.debias import average
  if cfg.threads:
    import torch
    torch.set_num_threads(cfg.threads)
  from llm_labeler.prompts import is_yesno
  template = model_template(cfg)
  runs = [("untuned", "", 1)]
  if cfg.lora:
    runs += [("tuned", cfg.lora, 1)] + ([("tuned_debiased", cfg.lora, cfg.permutations)]
                                        if cfg.permutations > 1 and not is_yesno(template)
                                        else [])
  out, backends = {}, {}
  for name, adapter, perms in runs:
    if adapter not in backends:
      backends[adapter] = HFBackend(cfg.model, catalog, cfg.k, cfg.batch_size,
                                    cfg.chat_template, lora=adapter, template=template)
    backend = backends[adapter]
    tokens, t0 = backend.prompt_tokens, time.perf_counter()
    lab = average(backend.label, req, perms, "label_quality")
    dt = time.perf_counter() - t0
    out[name] = (lab.choice, np.exp(lab.logprobs.astype(np.float64)))
    timing[name] = timing_row(len(lab.choice), perms, backend.renderer.per_request,
                              backend.prompt_tokens - tokens, dt)
    log(f"{name}: {len(lab.choice)} requests x {perms} orders in {dt:.1f}s")
  return out


def main(argv):
  cli.reject_extra_args(argv)
  run(config.from_flags(QualityConfig), log=lambda s: print(s, flush=True))


if __name__ == "__main__":
  config.define_flags(QualityConfig)
  cli.run(main)
