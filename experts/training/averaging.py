"""An exponential moving average of trained weights (Polyak averaging).

With a few cases, a batch of two patches and a constant step size, the weights of a short
adaptation wander from step to step, and so does the score of any one checkpoint. The average of
the last tens of iterates is a steadier model to score and to keep (Polyak & Juditsky, 1992;
Izmailov et al., 2018, "Averaging weights leads to wider optima"). ``decay`` sets the horizon,
about ``1 / (1 - decay)`` steps; early on the average uses ``min(decay, (1 + n) / (10 + n))`` after
``n`` updates so that it follows the first steps instead of staying at the start.
"""

from __future__ import annotations

import contextlib

import torch

__all__ = ["WeightAverage"]


class WeightAverage:
    """A moving average of ``params`` (a list of tensors that an optimiser updates in place).

    Args:
        params: the trained parameters.
        decay: in [0, 1); the average's weight on its previous value.
    """

    def __init__(self, params: list[torch.Tensor], decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"the weight average's decay must be in [0, 1), got {decay!r}")
        self.params = list(params)
        self.decay = decay
        self.updates = 0
        self.average = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        """Fold the current weights into the average (call after each optimiser step)."""
        self.updates += 1
        d = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        for a, p in zip(self.average, self.params):
            a.mul_(d).add_(p.detach(), alpha=1.0 - d)

    @contextlib.contextmanager
    def applied(self):
        """Within the block the parameters hold the average; afterwards their own values again."""
        own = [p.detach().clone() for p in self.params]
        self.copy_to_params()
        try:
            yield
        finally:
            with torch.no_grad():
                for p, v in zip(self.params, own):
                    p.copy_(v)

    @torch.no_grad()
    def copy_to_params(self) -> None:
        """Set the parameters to the average."""
        for p, a in zip(self.params, self.average):
            p.copy_(a)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "average": [a.clone() for a in self.average]}

    def load_state_dict(self, state: dict) -> None:
        if len(state["average"]) != len(self.average):
            raise ValueError(f"a weight average of {len(state['average'])} tensors cannot be loaded into one of {len(self.average)}")
        self.updates = int(state["updates"])
        with torch.no_grad():
            for a, v in zip(self.average, state["average"]):
                a.copy_(v)
