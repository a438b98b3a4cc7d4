"""What the commands share: the run config, MLflow tracking, model references, distributed set-up,
devices, seeds and output folders. Commands import from here and from ``experts``, never from
each other."""
