"""The annotation page's library: a doctor corrects predictions, saves them as their labels, and the
model learns their style from the saved cases.

- :mod:`~experts.annotation.labels`: the per-class masks of a case -> one label file (dense or partial).
- :mod:`~experts.annotation.store`: the dataset side: case states, atomic saves, the who/what/when log.
- :mod:`~experts.annotation.learning`: "learn my style": adaptation from the saved cases.
- :mod:`~experts.annotation.service`: the JSON API (what the page, a Slicer or a napari plugin calls).
- :mod:`~experts.annotation.server`: the local web server and the page's static files.
- :mod:`~experts.annotation.loop`: the learn-from-corrections loop with a simulated doctor.
"""
