"""Saving and loading: model files, weights files, archive reading, atomic writes.

* ``model_files``: ``save_model`` / ``load_model`` (architecture, compile settings,
  weights, optimizer state) and ``save_weights`` / ``load_weights``;
* ``rebuild``: objects made back from a file's description, every setting checked;
* ``archive``: reading a ``.npz`` archive without allocating more than it holds;
* ``atomic``: writing a file so that a crash leaves the old one intact.

This package never imports ``tinynn.models``: a model class registers itself
(``register_model``) so that a file can name it.
"""

from tinynn.saving.model_files import load_model, load_weights, save_model, save_weights
from tinynn.saving.rebuild import ModelFileError, register_model

__all__ = ["ModelFileError", "load_model", "load_weights", "register_model", "save_model",
           "save_weights"]
