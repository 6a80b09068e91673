"""TF-slim: the names of the zoo's variables in TF-slim checkpoints and DeepLab's checkpoint import.

- `names`: `{keras variable path: slim name}` maps, for the backbones (`slim_variable_names`)
  and DeepLab-v3+'s head (`head_slim_names`); pure functions of the layer names.
- `checkpoint`: `load_slim_checkpoint` assigns a TF1 checkpoint's variables by those names and
  reports what it did; `import_checkpoint_archive` is the `tf_checkpoint_archive` importer of
  `zoo.weights` (registered when this package is imported, as `zoo.load_models` does).
"""

from zoo.slim.checkpoint import SlimLoadReport, import_checkpoint_archive, load_slim_checkpoint
from zoo.slim.names import (
    aspp_slim_names,
    backbone_family,
    default_backbone_map,
    head_slim_names,
    head_slim_scopes,
    slim_variable_names,
)

__all__ = [
    "SlimLoadReport", "aspp_slim_names", "backbone_family", "default_backbone_map", "head_slim_names",
    "head_slim_scopes", "import_checkpoint_archive", "load_slim_checkpoint", "slim_variable_names",
]
