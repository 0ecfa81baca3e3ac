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

A backbone whose spec names a ``weights_model`` (a ``.keras`` model this project trained, such as
``pcam_mnet025``: MobileNet 0.25 fine-tuned on PCam) takes its weights from that model's layers of
the same names (`copy_weights_from_model`); `pretrained_weights` says which weights ``"auto"``
means for a backbone.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import h5py
import keras

import keras

from histolib import files
from histolib.models.backbones import BackboneSpec

#: The project root, which a backbone's ``weights_model`` path is relative to.
PROJECT_ROOT = Path(__file__).resolve().parents[2]

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
    try:
        return str(files.download(spec.weights_url + fname, target, md5=spec.weights_md5.get(fname)))
    except ConnectionError:
        raise WeightsNotFoundError(
            f"ImageNet weights for {spec.name!r} ({fname}) are not on disk and cannot be downloaded (no network). "
            f"Fetch {spec.weights_url}{fname} and put it in {where} or in {target.parent}, or pass weights=None or "
            "a weights file path. Received: weights='imagenet'") from None


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


def pretrained_weights(spec: BackboneSpec):
    """What ``weights="auto"`` means for ``spec``: ``"imagenet"`` for a published ImageNet
    backbone, the absolute path of its ``weights_model`` for one this project trained, ``None``
    for a backbone without pretrained weights (``seed_cnn``)."""
    if spec.weights_model is not None:
        path = PROJECT_ROOT / spec.weights_model
        if not path.is_file():
            raise FileNotFoundError(f"backbone {spec.name!r} takes its weights from {spec.weights_model}, which is "
                                    f"not at {path} (it ships with the repository, not the package)")
        return str(path)
    return "imagenet" if spec.weights_url else None


def _layers_of(model) -> list:
    """Every layer of ``model`` and of the models nested in it, outer first."""
    found = []
    for layer in model.layers:
        found.append(layer)
        if hasattr(layer, "layers"):
            found += _layers_of(layer)
    return found


def copy_weights_from_model(base: keras.Model, path) -> None:
    """Give every layer of ``base`` that has weights those of the layer of the same name in the
    ``.keras`` model at ``path`` (searched through its nested models, the first match winning).

    Raises:
        ValueError: naming the layers of ``base`` the model lacks, or whose shapes differ.
    """
    source = {layer.name: layer for layer in reversed(_layers_of(keras.saving.load_model(path, compile=False)))}
    missing = [layer.name for layer in base.layers if layer.weights and layer.name not in source]
    if missing:
        raise ValueError(f"{path} has no layers named {missing[:5]} ({len(missing)} in all) to take weights from")
    for layer in base.layers:
        if layer.weights:
            try:
                layer.set_weights(source[layer.name].get_weights())
            except ValueError as error:
                raise ValueError(f"{path}: layer {layer.name!r} does not fit: {error}") from None


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
