"""Hyperparameter search over any config key, with Optuna."""

from lmtune.search.study import SearchSummary, search

__all__ = ["SearchSummary", "search"]
