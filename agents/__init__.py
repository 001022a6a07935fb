"""Controllers that search MNMS environments: the MNMS controller and baselines."""

from agents.mnms import MNMS, ChildRecord, Controller, MNMSAskTell, MNMSConfig, UpdateStats
from agents.portfolio import SourceScores
from agents.random_search import random_search

__all__ = [
    "MNMS",
    "ChildRecord",
    "Controller",
    "MNMSAskTell",
    "MNMSConfig",
    "SourceScores",
    "UpdateStats",
    "random_search",
]
