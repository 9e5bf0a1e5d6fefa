"""Real-model tests of LoRA tuning (marker `llm`; README "Real-model tests"): a short tune of
SmolLM2-135M-Instruct lowers the label loss and writes its manifest, the hf backend serves the
adapter and so does vLLM's CPU engine (same labels), an adapter of another base model is
refused, and SIGTERM + rerun of the tune CLI ends as an uninterrupted run (on a tiny random
model with SmolLM2's tokenizer, to be quick); the same for the Yes/No template (a short
listwise tune, served by hf with its template by default, and by vLLM with the same labels)."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from jaxrec import shards
from jaxrec.errors import ConfigError
from jaxrec.labeling import sampling
from labeler.test_llm import OFFLINE, gguf_path, offline, smol_dir  # noqa: F401 - fixtures
from llm_labeler import lora
from llm_labeler.job import LabelConfig, label_directory
from llm_labeler.prompts import YESNO_TEMPLATE_VERSION as YESNO
from llm_labeler.tune import TuneConfig, checkpoint_dir, tune
from train.conftest import seq_env_dir  # noqa: F401 - the session fixture

pytestmark = pytest.mark.llm
K = 4
FLAGS = dict(num=48, k=K, history=3, batch_size=4, lr=2e-3, threads=2, log_every=3)


@pytest.fixture(scope="module")
def adapter(seq_env_dir, smol_dir, tmp_path_factory):  # noqa: F811
  out = str(tmp_path_factory.mktemp("tune") / "adapter")
  lines = []
  manifest = tune(TuneConfig(env=seq_env_dir, model=smol_dir, out=out, **FLAGS), log=lines.append)
  assert any("examples/s" in s and "ETA" in s for s in lines), lines
  return out, manifest


def test_a_short_tune_lowers_the_label_loss_and_writes_its_manifest(adapter, smol_dir):
  out, m = adapter
  curve = m["loss_curve"]
  assert len(curve) == m["steps"] == 12 and m["examples_seen"] == 48
  assert np.mean(curve[-3:]) < 0.5 * np.mean(curve[:3]), curve
  assert m["k"] == K and m["history"] == 3 and m["template_version"] == lora.TEMPLATE_VERSION
  assert m["base_model"]["path"] == smol_dir and len(m["base_model"]["weights_sha256"]) == 64
  assert m["dataset"]["split"] == "train" and m["flags"]["lr"] == FLAGS["lr"]
  assert set(lora.ADAPTER_FILES + (lora.MANIFEST,)) <= set(os.listdir(out))  # + peft's README
  assert not os.path.exists(checkpoint_dir(out))  # removed once the adapter is complete
  assert tune(TuneConfig(env="x", model="y", out=out, **FLAGS), log=print)["files"] == m["files"]


@pytest.fixture(scope="module")
def request_dir(seq_env_dir, tmp_path_factory):  # noqa: F811
  d = str(tmp_path_factory.mktemp("req") / "req")
  sampling.sample_requests(sampling.SampleConfig(num=8, k=K, shard_size=8, num_sessions=8), d,
                           env_dir=seq_env_dir, log=lambda s: None)
  return d


def test_the_hf_backend_serves_the_adapter(adapter, smol_dir, request_dir, tmp_path):
  out = str(tmp_path / "tuned")
  summary = label_directory(LabelConfig(requests=request_dir, out=out, backend="hf",
                                        model=smol_dir, lora=adapter[0]), log=lambda s: None)
  assert summary["labeled"] == ["requests-00000"]
  meta = shards.directory_meta(out)
  assert "LoRA" in meta["model"] and meta["backend_meta"]["lora"]["path"] == adapter[0]
  tuned = shards.read_labels(out, "requests-00000")
  label_directory(LabelConfig(requests=request_dir, out=str(tmp_path / "base"), backend="hf",
                              model=smol_dir), log=lambda s: None)
  base = shards.read_labels(str(tmp_path / "base"), "requests-00000")
  assert tuned.valid.all() and np.exp(tuned.logprobs).sum(1) == pytest.approx(1.0, abs=1e-4)
  assert np.abs(np.exp(tuned.logprobs) - np.exp(base.logprobs)).max() > 0.05  # it is applied
  debiased = str(tmp_path / "debiased")
  label_directory(LabelConfig(requests=request_dir, out=debiased, backend="hf", model=smol_dir,
                              lora=adapter[0], permutations=K), log=lambda s: None)
  assert "[4 rotations]" in shards.directory_meta(debiased)["model"]


def _vllm_and_hf_labels(adapter_dir, smol_dir, request_dir, tmp_path):  # noqa: F811
  """(vLLM label shard, hf label shard, vLLM's directory meta) of the same requests with the
  adapter: vLLM's CPU engine (enable_lora + LoRARequest) through the label CLI, hf in process
  (the adapter merged)."""
  out = str(tmp_path / "vllm")
  res = subprocess.run(
      [sys.executable, "-m", "llm_labeler.label", f"--requests={request_dir}", f"--out={out}",
       "--backend=vllm", f"--model={smol_dir}", f"--lora={adapter_dir}",
       "--gpu_memory_utilization=0.3", "--max_model_len=1024", "--max_num_seqs=8",
       "--enforce_eager", "--dtype=float32"],
      capture_output=True, text=True, timeout=1500, env=os.environ | OFFLINE)
  assert res.returncode == 0, res.stderr[-3000:]
  label_directory(LabelConfig(requests=request_dir, out=str(tmp_path / "hf"), backend="hf",
                              model=smol_dir, lora=adapter_dir), log=lambda s: None)
  return (shards.read_labels(out, "requests-00000"),
          shards.read_labels(str(tmp_path / "hf"), "requests-00000"), shards.directory_meta(out))


def test_vllm_serves_the_adapter_as_hf_does(adapter, smol_dir, request_dir, tmp_path):
  """vLLM's CPU engine with enable_lora + LoRARequest labels as the hf backend with the
  adapter merged: same choices, label probabilities equal to float tolerance."""
  vl, hf, meta = _vllm_and_hf_labels(adapter[0], smol_dir, request_dir, tmp_path)
  assert "LoRA" in meta["model"]
  np.testing.assert_array_equal(vl.choice, hf.choice)
  np.testing.assert_allclose(np.exp(vl.logprobs), np.exp(hf.logprobs), atol=1e-3)


@pytest.fixture(scope="module")
def tiny_dir(smol_dir, tmp_path_factory):
  """A 2-layer random Llama with SmolLM2's tokenizer: another base model, quick to train."""
  import torch
  from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
  tok = AutoTokenizer.from_pretrained(smol_dir, local_files_only=True)
  torch.manual_seed(0)
  lm = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                    num_hidden_layers=2, num_attention_heads=2,
                                    num_key_value_heads=2, tie_word_embeddings=True))
  d = str(tmp_path_factory.mktemp("tiny") / "tiny")
  lm.save_pretrained(d)
  tok.save_pretrained(d)
  return d


def test_an_adapter_of_another_base_model_is_refused(adapter, tiny_dir, request_dir, tmp_path):
  from llm_labeler.backends.hf_backend import HFBackend
  with pytest.raises(ConfigError, match="another base model"):
    HFBackend(tiny_dir, shards.read_catalog(request_dir), K, lora=adapter[0])
  out = tmp_path / "lab"
  res = subprocess.run([sys.executable, "-m", "llm_labeler.label", f"--requests={request_dir}",
                        f"--out={out}", "--backend=hf", f"--model={tiny_dir}",
                        f"--lora={adapter[0]}"], capture_output=True, text=True, timeout=600,
                       env=os.environ | OFFLINE)
  assert res.returncode == 2 and "another base model" in res.stderr.splitlines()[-1]
  assert not out.exists()


def _tune_cli(env, model, out, *extra):
  return [sys.executable, "-m", "llm_labeler.tune", f"--env={env}", f"--model={model}",
          f"--out={out}", "--num=64", f"--k={K}", "--history=3", "--batch_size=4", "--threads=1",
          "--log_every=1", "--save_every=100", *extra]


def test_sigterm_saves_and_a_rerun_ends_as_an_uninterrupted_tune(seq_env_dir, tiny_dir,  # noqa: F811
                                                                 tmp_path):
  whole, cut = tmp_path / "whole", tmp_path / "cut"
  env = os.environ | OFFLINE
  assert subprocess.run(_tune_cli(seq_env_dir, tiny_dir, whole), capture_output=True,
                        timeout=600, env=env).returncode == 0
  proc = subprocess.Popen(_tune_cli(seq_env_dir, tiny_dir, cut), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=env)
  for line in proc.stdout:
    if line.startswith("step 3/"):
      proc.send_signal(signal.SIGTERM)
      break
  _, err = proc.communicate(timeout=600)
  assert proc.returncode == 143 and "preempted:" in err, err
  assert not cut.exists() and os.path.isfile(os.path.join(checkpoint_dir(str(cut)), "state.json"))
  res = subprocess.run(_tune_cli(seq_env_dir, tiny_dir, cut), capture_output=True, text=True,
                       timeout=600, env=env)
  assert res.returncode == 0 and "resumed from" in res.stdout, res.stderr
  a, b = (json.load(open(os.path.join(d, lora.MANIFEST))) for d in (whole, cut))
  np.testing.assert_allclose(a["loss_curve"], b["loss_curve"], rtol=1e-5)
  from safetensors.numpy import load_file
  wa, wb = (load_file(os.path.join(d, "adapter_model.safetensors")) for d in (whole, cut))
  for name in wa:
    np.testing.assert_allclose(wa[name], wb[name], rtol=1e-5, atol=1e-7)


def test_the_shared_head_gives_the_full_forwards_logits_and_gradients(seq_env_dir, tiny_dir):  # noqa: F811
  import torch
  from peft import LoraConfig, get_peft_model
  from llm_labeler import tune as tune_lib
  from llm_labeler.backends import hf_backend
  cfg = TuneConfig(env=seq_env_dir, model=tiny_dir, out="unused", num=6, k=K, history=3)
  ex, _, catalog = tune_lib.train_examples(cfg)
  tokenizer, lm = hf_backend.load_model(tiny_dir, "float32")
  prompts, label_ids = tune_lib.render(cfg, ex, catalog, tokenizer)
  enc = [tokenizer.encode(p, add_special_tokens=True) for p in prompts]
  assert len({len(e) for e in enc}) > 1  # left padding is exercised
  prefix = hf_backend.common_prefix(enc)
  assert prefix > 20  # the template's head
  torch.manual_seed(0)
  model = get_peft_model(lm, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                        task_type="CAUSAL_LM"))
  for name, p in model.named_parameters():  # B = 0 at init would leave A without a gradient
    if "lora_B" in name:
      torch.nn.init.normal_(p, std=0.1)
  runs = []
  for head in (0, prefix):
    model.zero_grad()
    logits = hf_backend.label_logits(model, enc, tokenizer.eos_token_id, head)
    tune_lib.label_loss(logits, ex.target, label_ids, "labels").backward()
    runs.append((logits.detach().numpy(), [p.grad.numpy().copy() for p in model.parameters()
                                           if p.requires_grad]))
  np.testing.assert_allclose(runs[0][0], runs[1][0], atol=1e-4)
  for a, b in zip(runs[0][1], runs[1][1]):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6)
  assert max(np.abs(g).max() for g in runs[0][1]) > 0


def test_the_hf_backend_scores_the_same_with_and_without_the_shared_head(tiny_dir, request_dir):
  from llm_labeler.backends.hf_backend import HFBackend, load_model
  req = shards.read_requests(request_dir, "requests-00000")
  loaded = load_model(tiny_dir, "float32")
  catalog = shards.read_catalog(request_dir)
  shared, full = (HFBackend(tiny_dir, catalog, K, batch_size=3, loaded=loaded, share_prefix=s)
                  for s in (True, False))
  prompts = shared.renderer.render(req.history, req.candidates)
  a, b = shared.scores(prompts), full.scores(prompts)
  assert a.shape == (len(prompts), K + 1) and len(prompts) % 3 != 0  # a short last batch too
  np.testing.assert_allclose(a, b, atol=1e-4)
  assert shared.prompt_tokens == full.prompt_tokens > 0


def test_validation_passes_and_lora_on_chosen_layers(seq_env_dir, tiny_dir, tmp_path):  # noqa: F811
  from safetensors.numpy import load_file
  lines = []
  m = tune(TuneConfig(env=seq_env_dir, model=tiny_dir, out=str(tmp_path / "a"), num=16,
                      val_num=8, val_every=2, k=K, history=3, batch_size=4, layers="1-1",
                      threads=1, log_every=2), log=lines.append)
  assert [v["step"] for v in m["validation"]] == [2, 4]
  for v in m["validation"]:
    assert v["loss"] > 0 and 0 <= v["hit_at_1"] <= 1 and 0 <= v["prompt_spread"] <= 1
  assert sum("validation at step" in s for s in lines) == 2
  assert m["target_entropy"] > 0 and m["flags"]["val_num"] == 8
  names = list(load_file(os.path.join(tmp_path, "a", "adapter_model.safetensors")))
  assert names and all(".layers.1." in n for n in names), names


@pytest.fixture(scope="module")
def yesno_adapter(seq_env_dir, smol_dir, tmp_path_factory):  # noqa: F811
  out = str(tmp_path_factory.mktemp("tune") / "yesno")
  return out, tune(TuneConfig(env=seq_env_dir, model=smol_dir, out=out, template=YESNO,
                              loss="listwise", val_num=8, val_every=6, **FLAGS),
                   log=lambda s: None)


def test_a_short_yesno_tune_lowers_the_listwise_loss(yesno_adapter):
  out, m = yesno_adapter
  curve = m["loss_curve"]
  assert len(curve) == m["steps"] == 12 and m["prompts_seen"] == 48 * K
  assert np.mean(curve[-3:]) < np.mean(curve[:3]), curve
  assert m["template_version"] == YESNO and m["flags"]["loss"] == "listwise"
  assert [v["step"] for v in m["validation"]] == [6, 12]
  assert all(np.isfinite(v["loss"]) and 0 <= v["hit_at_1"] <= 1 for v in m["validation"])


def test_the_hf_backend_serves_a_yesno_adapter_with_its_template(yesno_adapter, smol_dir,
                                                                 request_dir, tmp_path):
  out = str(tmp_path / "tuned")
  label_directory(LabelConfig(requests=request_dir, out=out, backend="hf", model=smol_dir,
                              lora=yesno_adapter[0]), log=lambda s: None)
  assert shards.directory_meta(out)["template_version"] == YESNO  # the adapter's, by default
  tuned = shards.read_labels(out, "requests-00000")
  base_dir = str(tmp_path / "base")
  label_directory(LabelConfig(requests=request_dir, out=base_dir, backend="hf", model=smol_dir,
                              template=YESNO), log=lambda s: None)
  base = shards.read_labels(base_dir, "requests-00000")
  assert tuned.valid.all() and np.exp(tuned.logprobs).sum(1) == pytest.approx(1.0, abs=1e-4)
  # It is applied: 12 small steps move the probabilities by a few hundredths (0.036 at most
  # when written), far beyond float noise between two runs of the same weights.
  assert np.abs(np.exp(tuned.logprobs) - np.exp(base.logprobs)).max() > 1e-3
  np.testing.assert_array_equal(tuned.choice, np.argmax(tuned.logprobs, axis=1))


def test_vllm_serves_a_yesno_adapter_as_hf_does(yesno_adapter, smol_dir, request_dir, tmp_path):
  vl, hf, meta = _vllm_and_hf_labels(yesno_adapter[0], smol_dir, request_dir, tmp_path)
  assert meta["template_version"] == YESNO
  assert vl.valid.all()
  np.testing.assert_array_equal(vl.choice, hf.choice)
  np.testing.assert_allclose(np.exp(vl.logprobs), np.exp(hf.logprobs), atol=1e-3)
