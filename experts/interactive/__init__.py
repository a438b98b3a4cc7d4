"""Interactive segmentation in 3D: prompts, a promptable network's training with simulated
interaction, a session that refines one class with clicks, scribbles and boxes in an expert's
style, and the interactive evaluation protocol of the CVPR 2025 challenge.

- :mod:`experts.interactive.prompts`: prompt records and their seven input channels;
- :mod:`experts.interactive.corrections`: the next click or scribble at the largest error;
- :mod:`experts.interactive.simulate`: training batches with simulated rounds;
- :mod:`experts.interactive.building`: a promptable model from a pretrained one;
- :mod:`experts.interactive.session`: :class:`InteractiveSession` (crop, paste, undo, redo);
- :mod:`experts.interactive.prompt_file`: the ``prompts.json`` of ``expertseg refine``;
- :mod:`experts.interactive.protocol`: box (or scribble) then 5 clicks, Dice/NSD per step.
"""

from experts.interactive.prompts import CHANNELS, PROMPT_CHANNELS, Prompt, PromptEncoding, render_prompts

__all__ = ["CHANNELS", "PROMPT_CHANNELS", "Prompt", "PromptEncoding", "render_prompts"]
