"""BrainTissueDemo: a synthetic multi-expert brain tissue dataset built offline from MNI152.

Pseudo-subjects are the MNI152 2009 template (shipped with nilearn) under random smooth warps and
intensity changes (:mod:`~experts.data.demo.anatomy`); simulated experts label the same soft anatomy
with their own consistent styles (:mod:`~experts.data.demo.styles`), one of them a new doctor for
adaptation; :func:`make_demo_dataset` writes it all in the dataset layout (version 1).

Example:
    >>> from experts.data.demo import make_demo_dataset
    >>> root = make_demo_dataset("data/BrainTissueDemo", seed=0)   # ~20 s on 2 cores
    >>> nuclei = make_demo_dataset("data/DeepNucleiDemo", structures="nuclei")   # compact structures, 2 mm
"""

from experts.data.demo.anatomy import Subject, make_subject, make_subject_params, output_grid, posterior_fossa
from experts.data.demo.build import DESCRIPTION, NUCLEI_DESCRIPTION, PARAMS_FILE, STRUCTURES, draw_params, make_demo_dataset, replay_label, style_dice
from experts.data.demo.styles import DEMO_EXPERTS, LABELS, NUCLEI_LABELS, Expert, NucleiStyle, TissueStyle

__all__ = [
    "make_demo_dataset",
    "draw_params",
    "replay_label",
    "style_dice",
    "DESCRIPTION",
    "NUCLEI_DESCRIPTION",
    "STRUCTURES",
    "PARAMS_FILE",
    "DEMO_EXPERTS",
    "LABELS",
    "NUCLEI_LABELS",
    "NucleiStyle",
    "Expert",
    "TissueStyle",
    "Subject",
    "make_subject",
    "make_subject_params",
    "output_grid",
    "posterior_fossa",
]
