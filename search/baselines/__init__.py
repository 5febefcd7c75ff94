"""One-shot baselines (uniform, OWL, ShortGPT, angular, FinerCut, SPDY): genomes without search, at exact budgets.

Their job-file specs are in ``specs`` (no torch); implementations in the other modules.
"""
