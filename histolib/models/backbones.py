"""One spec per backbone, after timm's registry: constructor, scaling, sizes, layers.

Feature maps ``(grid x grid x channels)`` of each backbone's last block (``include_top=False``)
at three input sizes, measured with Keras 3.15:

=============  ==========  ==========  ==========  ========  ====================  ========
backbone       96 px       224 px      299 px      channels  Grad-CAM layer        min size
=============  ==========  ==========  ==========  ========  ====================  ========
inception_v3   1 x 1       5 x 5       8 x 8       2048      mixed10               139
xception       3 x 3       7 x 7       10 x 10     2048      block14_sepconv2_act  71
mobilenet      3 x 3       7 x 7       9 x 9       1024      conv_pw_13_relu       95
seed_cnn       12 x 12     28 x 28     37 x 37     256       conv3                 24
=============  ==========  ==========  ==========  ========  ====================  ========

"min size" is the smallest square input that gives at least a 3 x 3 map (`MIN_GRID`). A 1 x 1
map (InceptionV3 at 96 px) leaves attention a single token, which can only attend to itself,
and gives Grad-CAM a single cell, so `build_classifier` resizes smaller inputs up to the
backbone's min size inside the model (a ``Resizing`` layer after the input); the model's input
shape stays what the caller asked for.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Callable

import keras

from histolib.names import unknown_name

#: The smallest feature map side `build_classifier` accepts for attention and Grad-CAM.
MIN_GRID = 3

_KERAS_WEIGHTS = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclass(frozen=True)
class BackboneSpec:
    """What the builders need to know about one backbone.

    Attributes:
        name: the registry name (``"inception_v3"``, ...).
        constructor: the ``keras.applications`` function, or ``None`` for ``seed_cnn``.
        scale, offset: the ``Rescaling(scale, offset)`` that maps [0, 1] images to what the
            backbone's ``preprocess_input`` gives for 0-255 images (``"tf"`` mode:
            ``x / 127.5 - 1``, hence ``2 x - 1`` on [0, 1]); ``(1, 0)`` means no scaling.
        default_size: the input side the backbone was trained at.
        gradcam_layer: the name of the last convolutional block's output, for Grad-CAM.
        channels: channels of the last feature map.
        min_size: smallest input side that gives a `MIN_GRID` x `MIN_GRID` map.
        grid: feature map side at 96, 224 and 299 pixels.
        attention_dim: the attention width `build_classifier` uses on this backbone.
        weights_url: the directory the ImageNet weights files are published in, or ``None``.
        weights_files: ``{input side: file name}`` of the published ImageNet weights without the
            top (MobileNet has one file per input size; see `weights_file`); empty for none.
        weights_md5: ``{file name: MD5}`` where the publisher gives one (downloads are checked).
        weights_model: a ``.keras`` model, relative to the project root, whose layers of the same
            names give this backbone its weights (``weights="auto"``), e.g. a backbone fine-tuned
            by this project; ``None`` for the published ImageNet backbones.
    """

    name: str
    constructor: Callable | None
    scale: float
    offset: float
    default_size: int
    gradcam_layer: str
    channels: int
    min_size: int
    grid: dict = field(default_factory=dict)
    attention_dim: int = 256
    weights_url: str | None = None
    weights_files: dict = field(default_factory=dict)
    weights_md5: dict = field(default_factory=dict)
    weights_model: str | None = None

    @property
    def application(self) -> str:
        """The ``keras.applications`` call as text, e.g. ``"MobileNet(alpha=0.25)"``; ``"(histolib)"``
        for ``seed_cnn``."""
        if self.constructor is None:
            return "(histolib)"
        options = ", ".join(f"{k}={v!r}" for k, v in getattr(self.constructor, "keywords", {}).items())
        return f"{getattr(self.constructor, 'func', self.constructor).__name__}({options})"

    def weights_file(self, input_size: int | None = None) -> str | None:
        """The ImageNet weights file (without the top) for ``input_size``, from `weights_files`:
        the entry for that size, else the one for `default_size`; ``None`` for a backbone
        without pretrained weights."""
        if not self.weights_files:
            return None
        return self.weights_files.get(input_size, self.weights_files[self.default_size])


def _mobilenet(name: str, alpha: float, *, channels: int, tag: str, attention_dim: int, md5: dict) -> BackboneSpec:
    """A MobileNet v1 entry: its four published input sizes each have their own weights file."""
    return BackboneSpec(
        name=name, constructor=functools.partial(keras.applications.MobileNet, alpha=alpha) if alpha != 1.0
        else keras.applications.MobileNet, scale=2.0, offset=-1.0, default_size=224,
        gradcam_layer="conv_pw_13_relu", channels=channels, min_size=95, grid={96: 3, 224: 7, 299: 9},
        attention_dim=attention_dim, weights_url=_KERAS_WEIGHTS + "mobilenet/",
        weights_files={size: f"mobilenet_{tag}_{size}_tf_no_top.h5" for size in (128, 160, 192, 224)},
        weights_md5=md5)


def _at_299(name: str, constructor, *, gradcam_layer: str, min_size: int, grid: dict, md5: str) -> BackboneSpec:
    """An entry for InceptionV3 or Xception: 299-px ImageNet weights in one file, 2048 channels."""
    file = f"{name}_weights_tf_dim_ordering_tf_kernels_notop.h5"
    return BackboneSpec(
        name=name, constructor=constructor, scale=2.0, offset=-1.0, default_size=299, gradcam_layer=gradcam_layer,
        channels=2048, min_size=min_size, grid=grid, weights_url=_KERAS_WEIGHTS + f"{name}/",
        weights_files={299: file}, weights_md5={file: md5})


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        _at_299("inception_v3", keras.applications.InceptionV3, gradcam_layer="mixed10", min_size=139,
                grid={96: 1, 224: 5, 299: 8}, md5="bcbd6486424b2319ff4ef7d526e38f63"),
        _at_299("xception", keras.applications.Xception, gradcam_layer="block14_sepconv2_act", min_size=71,
                grid={96: 3, 224: 7, 299: 10}, md5="b0042744bf5b25fce3cb969f33bebb97"),
        _mobilenet("mobilenet", 1.0, channels=1024, tag="1_0", attention_dim=256, md5={}),
        _mobilenet("mobilenet_025", 0.25, channels=256, tag="2_5", attention_dim=128,
                   md5={"mobilenet_2_5_224_tf_no_top.h5": "f313cee49f5d33dfb06f2b255c4adb64"}),
        dataclasses.replace(  # the same network, its weights fine-tuned on PCam by this project (issue 11)
            _mobilenet("mobilenet_025", 0.25, channels=256, tag="2_5", attention_dim=128, md5={}),
            name="pcam_mnet025", weights_files={}, weights_url=None,
            weights_model="book/results/models/pcam-mnet-s1.keras"),
        BackboneSpec(
            name="seed_cnn", constructor=None, scale=1.0, offset=0.0, default_size=96, gradcam_layer="conv3",
            channels=256, min_size=24, grid={96: 12, 224: 28, 299: 37}, attention_dim=128,
        ),
    )
}


def seed_cnn_features(inputs, *, l2: float = 1e-4):
    """The PCam seed's convolutional trunk on ``inputs`` ``(batch, h, w, 3)`` in [0, 1].

    Three blocks of ``Conv2D(f, 3, padding="same", activation="relu")`` then
    ``MaxPooling2D(2)``, with ``f`` = 64, 128, 256 and L2 ``l2`` on the kernels. The
    convolutions are named ``conv1`` ... ``conv3`` (the last is Grad-CAM's layer). Returns the
    map ``(batch, h // 8, w // 8, 256)``: 12x12 at 96 pixels.
    """
    x = inputs
    for index, filters in enumerate((64, 128, 256), start=1):
        x = keras.layers.Conv2D(
            filters,
            3,
            padding="same",
            activation="relu",
            kernel_regularizer=keras.regularizers.L2(l2),
            name=f"conv{index}",
        )(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{index}")(x)
    return x


def list_backbones() -> list[str]:
    """The backbone names `build_classifier` accepts."""
    return list(BACKBONES)


def get_backbone(name: str) -> BackboneSpec:
    """The spec of backbone ``name``; an unknown name raises ``ValueError`` listing the valid
    ones and suggesting the closest."""
    if name not in BACKBONES:
        raise unknown_name("backbone", name, BACKBONES, argument="backbone")
    return BACKBONES[name]


def gradcam_layer_name(model: keras.Model) -> str:
    """The Grad-CAM layer of a model made by these builders: the first backbone's
    ``gradcam_layer`` found in ``model`` (``"conv3"`` for the PCam seed)."""
    names = {layer.name for layer in model.layers}
    for spec in BACKBONES.values():
        if spec.gradcam_layer in names:
            return spec.gradcam_layer
    raise ValueError(
        "No known Grad-CAM layer in this model; expected one of "
        f"{', '.join(s.gradcam_layer for s in BACKBONES.values())}. Received: model.name={model.name!r}"
    )
