"""Controllers that search MNMS environments: the MNMS controller and baselines."""

from agents.mnms import MNMS, ChildRecord, Controller, MNMSConfig, UpdateStats
from agents.random_search import random_search

__all__ = ["MNMS", "ChildRecord", "Controller", "MNMSConfig", "UpdateStats", "random_search"]
