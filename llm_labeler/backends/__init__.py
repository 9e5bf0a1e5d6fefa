"""Labeler backends behind one interface (`base.Backend`): vllm, hf, oracle.

Each backend module imports its heavy dependency (vLLM, torch/transformers, the JAX env) only
when a backend is built, so importing llm_labeler stays light.
"""

BACKENDS = ("vllm", "hf", "oracle")
