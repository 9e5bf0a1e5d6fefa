"""Simulators as pure functions (gymnax-shaped): reset/step over flax.struct state and params."""

from jaxrec.envs.base import EnvState, Observation, QuitParams, RecEnv
from jaxrec.envs.matrix import MatrixEnv, MatrixParams
from jaxrec.envs.sequential import SequentialEnv, SequentialParams

__all__ = ["EnvState", "MatrixEnv", "MatrixParams", "Observation", "QuitParams", "RecEnv",
           "SequentialEnv", "SequentialParams"]
