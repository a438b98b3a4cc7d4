"""``expertseg bench``: the project's claims as numbers anyone can reproduce.

Suites (each writes its numbers into ``<out>/results.json``; ``BENCHMARKS.md`` and PNG plots are
made from that file):

- ``efficiency``: label-efficiency curves on held-out experts (the demo's new doctor, and one
  pretraining expert left out in turn) for K labelled cases, dense and scribbled, against zero-shot
  rows, the oracle that had the expert in pretraining, training from scratch and fine-tuning all;
- ``modelling``: per-expert Dice of the CIN model against one model per expert, one model on
  pooled labels and one on STAPLE consensus labels;
- ``scribbles``: pretraining from scribbles only against dense labels of the same experts;
- ``speed``: speed and memory ratios measured within one run;
- ``selection`` (named only): label-efficiency curves of held-out experts adapted on the cases each
  case-selection strategy chose (``expertseg suggest``), with 95 % intervals.

Pretrainings are shared between suites. ``--quick`` runs everything at toy scale in minutes
(numbers that exercise the machinery, not claims); the full mode uses ``configs/bench.yaml``.
"""

from pipelines.bench.runner import BenchContext, run_bench

__all__ = ["BenchContext", "run_bench"]
