"""Where a backbone's ImageNet weights come from, without waiting on a dead network.

``weights`` is ``None`` (random initialisation), ``"imagenet"`` or the path to a weights file.
For ``"imagenet"`` the file is the one the backbone's spec names for the input size
(`histolib.models.backbones.BackboneSpec.weights_file`), and the first of these wins:

1. ``$HISTOLIB_WEIGHTS_DIR/<file>``: loaded as a local file;
2. ``weights/<file>`` in histolib's user cache (`histolib.files.cache_dir`), where step 3 puts it;
3. the network: downloaded from the spec's ``weights_url`` into that cache (MD5-checked where the
   spec knows the MD5), if the host answers within a few seconds;
4. otherwise `WeightsNotFoundError` names the file, its URL and the two places to put it.

The answer is always a file path, which the ``keras.applications`` constructor loads, so Keras's
own download cache is never consulted.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import h5py
import keras

from histolib import files
from histolib.models.backbones import BackboneSpec

log = logging.getLogger(__name__)


class WeightsNotFoundError(FileNotFoundError):
    """ImageNet weights are neither on disk nor downloadable."""


def weights_cache_dir() -> Path:
    """Where downloaded ImageNet weights are kept: ``weights/`` in histolib's user cache."""
    return files.cache_dir() / "weights"


def _imagenet_file(spec: BackboneSpec, input_size: int | None) -> str:
    """The local path of ``spec``'s ImageNet file for ``input_size`` (see the module docstring)."""
    fname = spec.weights_file(input_size)
    if fname is None:
        raise ValueError(f"Backbone {spec.name!r} has no ImageNet weights; pass weights=None (train from "
                         "scratch) or a weights file. Received: weights='imagenet'")
    local_dir = os.environ.get("HISTOLIB_WEIGHTS_DIR")
    if local_dir and (Path(local_dir) / fname).is_file():
        log.info("Loading %s ImageNet weights from %s", spec.name, Path(local_dir) / fname)
        return str(Path(local_dir) / fname)
    target = weights_cache_dir() / fname
    where = f"$HISTOLIB_WEIGHTS_DIR ({local_dir})" if local_dir else "a directory named by $HISTOLIB_WEIGHTS_DIR"
    by_hand = f"Fetch it by hand and put it in {where} or in {target.parent}"
    try:
        return str(files.download(spec.weights_url + fname, target, md5=spec.weights_md5.get(fname),
                                  by_hand=by_hand))
    except ConnectionError as error:
        raise WeightsNotFoundError(
            f"ImageNet weights for {spec.name!r} ({fname}) are not on disk and cannot be downloaded "
            f"({error}). Fetch {spec.weights_url}{fname} and put it in {where} or in {target.parent}, "
            "or pass weights=None or a weights file path. Received: weights='imagenet'") from None


def resolve_weights(spec: BackboneSpec, weights, input_size: int | None = None):
    """What to pass as ``weights=`` to the backbone's ``keras.applications`` constructor.

    Args:
        spec: the backbone.
        weights: ``None``, ``"imagenet"`` or a path to a Keras ``.h5`` weights file for the
            backbone without its top.
        input_size: the backbone's input side (MobileNet's file depends on it).

    Returns:
        ``None`` or a file path.

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
        raise ValueError(f"weights must be None, 'imagenet' or a file path. Received: weights={weights!r}")
    return _imagenet_file(spec, input_size)


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
