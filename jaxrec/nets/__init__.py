"""Networks of the agents: the SASRec state encoder G and the actor / critic heads."""

from jaxrec.nets.networks import ActorCritic, ActorValue, NetConfig, QNetwork, init_params

__all__ = ["ActorCritic", "ActorValue", "NetConfig", "QNetwork", "init_params"]
