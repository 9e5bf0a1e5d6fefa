"""Networks of the agents: the SASRec state encoder G and the actor / critic heads."""

from jaxrec.nets.networks import ActorCritic, ActorValue, NetConfig, QNetwork

__all__ = ["ActorCritic", "ActorValue", "NetConfig", "QNetwork"]
