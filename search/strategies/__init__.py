"""Every strategy kind, registered by importing its module here (one line per kind)."""

from paretopress.search.strategies import evopress, nsga2, random  # noqa: F401 - registers the kinds
from paretopress.search.strategies.base import STRATEGIES, SearchSetting, Strategy, StrategySpec, Trial

__all__ = ["STRATEGIES", "SearchSetting", "Strategy", "StrategySpec", "Trial"]
