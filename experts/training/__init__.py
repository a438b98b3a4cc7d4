"""Training building blocks: sampling, the loop, schedules, checkpoints, validation."""
