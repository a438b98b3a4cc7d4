"""The bench's toy mode: every suite in seconds (the numbers mean nothing at this scale)."""

TINY_OVERRIDES = (
    "network.channels=[4,8]",
    "data.patch_size=[16,16,16]",
    "data.n_folds=4",
    "train.steps=4",
    "train.val_every=1000",
    "train.checkpoint_every=1000",
    "adapt.steps=2",
    "adapt.eval_every=1",
    "adapt.batch_size=1",
    "predict.sw_batch_size=1",
)


def tiny_mode_settings(**changes) -> dict:
    """A bench mode (``runner.MODES`` entry) of 8 training cases at 8 mm, with ``changes``."""
    return {"n_train": 8, "n_test": 2, "spacing": 8.0, "config": None, "seeds": 1, "ks": [3], "overrides": TINY_OVERRIDES, "scratch_steps": 2, **changes}


#: the toy mode of the suites that pretrain an interactive model (one round of simulated prompts)
TINY_INTERACTIVE = tiny_mode_settings(overrides=TINY_OVERRIDES + ("interactive.rounds=1",))
