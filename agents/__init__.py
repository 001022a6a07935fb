"""Controllers that search MNMS environments: the MNMS controller and baselines."""
