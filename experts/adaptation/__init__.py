"""Adapting a pretrained multi-expert model to a new annotator: new rows, what trains, adapters."""

from experts.adaptation.adapter import apply_adapter, is_adapter, read_adapter_meta, save_adapter
from experts.adaptation.rows import INIT_STRATEGIES, initial_rows
from experts.adaptation.trainable import TRAINABLE_SETS, select_trainable

__all__ = [
    "INIT_STRATEGIES",
    "TRAINABLE_SETS",
    "apply_adapter",
    "initial_rows",
    "is_adapter",
    "read_adapter_meta",
    "save_adapter",
    "select_trainable",
]
