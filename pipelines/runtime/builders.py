"""The library objects a run is made of, built from its config: one place for every command.

Pretraining, adaptation and tuning trials read the same config sections the same way: the loss
terms and augmentation the model was pretrained with, the ``adapt`` section, the scribble style.
"""

from __future__ import annotations

import dataclasses

from experts.errors import ConfigError, ModelFileError
from pipelines.runtime.config import Config, config_from_dict

__all__ = ["pretraining_config", "adapter_from_config", "scribble_settings"]


def pretraining_config(bundle) -> Config:
    """The config a model was pretrained with (written by this or an earlier version)."""
    try:
        return config_from_dict(bundle.config or {}, where=f"config of model {bundle.model_id[:12] or '?'}")
    except ConfigError as err:
        raise ModelFileError([f"the model's config.yaml does not load: {line}" for line in err.problems]) from None


def adapter_from_config(base, expert: str, cfg: Config, **runtime):
    """An :class:`~experts.adaptation.Adapter` for ``expert`` with ``cfg.adapt``, the pretraining's
    loss and augmentation, and ``runtime`` settings (device, workdir, resume, progress, hooks,
    init_scores, or overrides of ``holdout``/``steps``)."""
    from experts.adaptation import Adapter

    a, pre = cfg.adapt, pretraining_config(base)
    settings = dict(
        init=dataclasses.asdict(a.init),
        trainable=dataclasses.asdict(a.trainable),
        steps=a.steps,
        lr=a.lr,
        head_lr=a.head_lr,
        average=a.average,
        batch_size=a.batch_size,
        eval_every=a.eval_every,
        holdout=a.holdout,
        seed=cfg.seed,
        checkpoint_every=a.checkpoint_every,
        loss_terms=[dataclasses.asdict(t) for t in pre.loss.terms],
        augment=dataclasses.asdict(pre.augment),
    )
    return Adapter(base, expert, **{**settings, **runtime})


def scribble_settings(cfg: Config) -> dict:
    """``style`` and its params for :func:`experts.scribbles.simulate_scribbles`."""
    return {"style": cfg.scribbles.name, **cfg.scribbles.params}
