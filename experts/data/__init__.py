"""The dataset layer: the multi-expert layout, NIfTI I/O, plans, transforms and datasets."""
