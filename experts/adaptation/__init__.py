"""Adapting a pretrained multi-expert model to a new annotator: new rows, what trains, adapters."""

from experts.adaptation.fitting import Adapter, LabelledCase, choose_cases
from experts.adaptation.adapter import apply_adapter, is_adapter, read_adapter_meta, save_adapter
from experts.adaptation.rows import INIT_STRATEGIES, InitStrategy, create_init, initial_rows
from experts.adaptation.trainable import TRAINABLE_SETS, TrainableSet, create_trainable, select_trainable

__all__ = [
    "Adapter",
    "LabelledCase",
    "choose_cases",
    "INIT_STRATEGIES",
    "InitStrategy",
    "TrainableSet",
    "create_init",
    "create_trainable",
    "TRAINABLE_SETS",
    "apply_adapter",
    "initial_rows",
    "is_adapter",
    "read_adapter_meta",
    "save_adapter",
    "select_trainable",
]
