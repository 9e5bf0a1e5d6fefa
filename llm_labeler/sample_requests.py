"""python -m llm_labeler.sample_requests ...: the earlier name of `python -m
jaxrec.sample_requests` (request sampling runs the JAX envs, so it lives on the jaxrec side);
same flags, same output."""

from jaxrec import cli
from jaxrec.sample_requests import main

if __name__ == "__main__":
  cli.run(main)
