"""jaxrec: LLM-driven policy exploration for RL recommenders, in JAX.

Importing jaxrec never imports vLLM, torch or transformers.
"""

__version__ = "0.1.0"
