"""Where a backbone's ImageNet weights come from, without waiting on a dead network.

``weights`` is ``None`` (random initialisation), ``"imagenet"`` or the path to a weights file.
For ``"imagenet"`` the first of these wins:

1. ``$HISTOLIB_WEIGHTS_DIR/<Keras file name>`` (e.g.
   ``inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5``): loaded as a local file;
2. Keras's own cache, ``$KERAS_HOME/models`` (default ``~/.keras/models``): Keras loads it;
3. the network: Keras downloads the file into its cache, if ``storage.googleapis.com``
   answers within a few seconds;
4. otherwise `WeightsNotFoundError` names the file, its URL and the two places to put it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from histolib.data._net import reachable
from histolib.models.backbones import BackboneSpec

log = logging.getLogger(__name__)

WEIGHTS_HOST = "storage.googleapis.com"


class WeightsNotFoundError(FileNotFoundError):
    """ImageNet weights are neither on disk nor downloadable."""


def keras_cache_dir() -> Path:
    """Keras's download cache for application weights: ``$KERAS_HOME/models``, else
    ``~/.keras/models`` (``/tmp/.keras/models`` where the home directory is read-only)."""
    home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")
    if not os.access(home if home.exists() else home.parent, os.W_OK):
        home = Path("/tmp/.keras")
    return home / "models"


def resolve_weights(spec: BackboneSpec, weights, input_size: int | None = None):
    """What to pass as ``weights=`` to the backbone's ``keras.applications`` constructor.

    Args:
        spec: the backbone.
        weights: ``None``, ``"imagenet"`` or a path to a Keras ``.h5`` weights file for the
            backbone without its top.
        input_size: the backbone's input side (MobileNet's file name depends on it).

    Returns:
        ``None``, ``"imagenet"`` (Keras loads from its cache or downloads) or a file path.

    Raises:
        ValueError: for ``weights`` of another kind, or ``"imagenet"`` on a backbone without
            pretrained weights.
        FileNotFoundError: for a path that does not exist.
        WeightsNotFoundError: offline with no local copy of the ImageNet file.
    """
    if weights is None:
        return None
    if isinstance(weights, os.PathLike) or (isinstance(weights, str) and weights != "imagenet"):
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"weights file not found. Received: weights={str(weights)!r}")
        return str(path)
    if weights != "imagenet":
        raise ValueError(
            f"weights must be None, 'imagenet' or a file path. Received: weights={weights!r}"
        )
    fname = spec.weights_file(input_size)
    if fname is None:
        raise ValueError(
            f"Backbone {spec.name!r} has no ImageNet weights; pass weights=None (train from "
            f"scratch) or a weights file. Received: weights='imagenet'"
        )
    local_dir = os.environ.get("HISTOLIB_WEIGHTS_DIR")
    if local_dir and (Path(local_dir) / fname).is_file():
        log.info("Loading %s ImageNet weights from %s", spec.name, Path(local_dir) / fname)
        return str(Path(local_dir) / fname)
    cached = keras_cache_dir() / fname
    if cached.is_file():
        log.info("Loading %s ImageNet weights from Keras's cache %s", spec.name, cached)
        return "imagenet"
    if reachable(WEIGHTS_HOST):
        log.info("Downloading %s ImageNet weights into Keras's cache %s", spec.name, cached.parent)
        return "imagenet"
    where = f"$HISTOLIB_WEIGHTS_DIR ({local_dir})" if local_dir else "a directory named by $HISTOLIB_WEIGHTS_DIR"
    raise WeightsNotFoundError(
        f"ImageNet weights for {spec.name!r} are not on disk and {WEIGHTS_HOST} cannot be "
        f"reached. Fetch {spec.weights_url}{fname} and put it in {where} or in Keras's cache "
        f"{cached.parent}, or pass weights=None or a weights file path. "
        f"Received: weights='imagenet'"
    )


def write_application_weights(model, path) -> Path:
    """Write ``model``'s weights in the layout of Keras's own application files (legacy HDF5).

    The layout ``keras.applications`` constructors load with ``weights=<file>``: attributes
    ``layer_names``, ``backend`` and ``keras_version``, and a group per layer whose
    ``weight_names`` list its weights, trainable first. Use it to make a stand-in for an
    ImageNet file (a randomly initialised backbone saved under Keras's file name, see
    `BackboneSpec.weights_file`) to try the offline route through ``$HISTOLIB_WEIGHTS_DIR``.

    Args:
        model: a Keras model, e.g. ``keras.applications.MobileNet(include_top=False, weights=None)``.
        path: the ``.h5`` file to write.

    Returns:
        ``path``.
    """
    import h5py
    import keras

    path = Path(path)
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [layer.name.encode("utf8") for layer in model.layers]
        f.attrs["backend"] = keras.backend.backend().encode("utf8")
        f.attrs["keras_version"] = keras.__version__.encode("utf8")
        for layer in model.layers:
            weights = layer.trainable_weights + layer.non_trainable_weights
            names = [w.path.encode("utf8") for w in weights]
            group = f.create_group(layer.name)
            group.attrs["weight_names"] = names
            for name, weight in zip(names, weights):
                group.create_dataset(name, data=keras.ops.convert_to_numpy(weight))
    return path
