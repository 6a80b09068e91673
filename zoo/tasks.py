"""The tasks a registered model, a weights entry and an export may have.

A module of its own, importing nothing, so that `zoo.registry` and `zoo.weights` (which the
registry imports) both take it, and `zoo list`/`describe` stay free of TensorFlow. `training`
keeps the same tuple (`training.data.TASKS`): it never imports `zoo`, and `zoo list`/`describe`
never import `layers`, the one package both could share; tests/zoo/test_registry.py holds the
two equal.
"""

TASKS = ("classification", "detection", "segmentation")
