"""Choosing which cases a new doctor labels first (``expertseg suggest``).

Strategies are registered by name in :data:`STRATEGIES` (this module imports every member):
``random``, ``foreground-random``, ``disagreement``, ``diversity``, ``disagreement+diversity``.
Each ranks candidate cases from what the existing experts' rows predict on their images
(:class:`CaseSignals`), never from the new doctor's labels.
"""

from experts.selection.signals import SIGNALS, CaseSignals, bottleneck_feature, case_signals, network_with_features
from experts.selection.strategies import STRATEGIES, RankedCase, SelectionStrategy, create_strategy
from experts.selection.diversity import DisagreementDiversity, Diversity
from experts.selection.suggest import CANDIDATES, Suggestion, candidate_cases, check_k, suggest_cases

__all__ = [
    "CANDIDATES",
    "CaseSignals",
    "DisagreementDiversity",
    "Diversity",
    "RankedCase",
    "SIGNALS",
    "STRATEGIES",
    "SelectionStrategy",
    "Suggestion",
    "bottleneck_feature",
    "candidate_cases",
    "case_signals",
    "check_k",
    "create_strategy",
    "network_with_features",
    "suggest_cases",
]
