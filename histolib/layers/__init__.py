"""Every Keras layer of histolib, registered under the package name ``"histolib"``.

``import histolib`` imports this package, so ``keras.saving.load_model`` finds these layers in a
saved histolib model without further imports.

Attention layers over image tokens, in Keras 3 (``keras.ops`` only, any backend):

- `SelfAttention`: single-head scaled dot-product attention, the PCam seed's block.
- `ThresholdedAttention`: unscaled softmax with below-uniform weights zeroed, the ovarian
  seed's layer (which it called "differential attention").
- `DifferentialAttention`: Ye et al. 2024's differential attention, head pairs as in the
  official code.

The three take tokens ``(batch, n, channels)`` or a feature map ``(batch, h, w, channels)``
(flattened row-major by `to_tokens`), accept ``return_attention_scores=True`` to return
``(output, map)`` with the map in float32, compute their softmax in float32 under
``mixed_bfloat16``, run under ``jit_compile=True`` and on the TensorFlow and JAX backends,
and are registered serializable under the package name ``"histolib"``.

Over bags of instances (multiple-instance learning, `histolib.layers.mil`):

- `AttentionMILPooling`: Ilse et al. 2018's attention pooling, plain or gated, with a padding
  mask; ``return_attention_scores=True`` gives ``(pooled, scores)``, one weight per instance.
- `MaskedGlobalMaxPooling1D`: the max over a bag's real instances (Keras's
  ``GlobalMaxPooling1D`` ignores masks).
- `TileImage`: an image of any size cut into tiles at native resolution, with their mask;
  `DihedralMean`: a tile encoder averaged over the 8 flips and rotations (`histolib.layers.tiles`).

Others:

- `RandomFlips`, `RandomHEDJitter`: random preprocessing for the augmentation sets of
  `histolib.layers.augmentation` (run inside ``tf.data`` under any backend);
- `TrainingAugmentation`: an augmentation set inside a model, on in training steps only
  (`histolib.models.with_augmentation`);
- `FoldedBatchNorm`: the identity that stands where a batch norm was folded away
  (`histolib.models.fold_batch_norm`).
"""

from histolib.layers.augmentation import TrainingAugmentation
from histolib.layers.differential import DifferentialAttention, lambda_init_for_depth
from histolib.layers.folded import FoldedBatchNorm
from histolib.layers.mil import AttentionMILPooling, MaskedGlobalMaxPooling1D
from histolib.layers.preprocessing import RandomFlips, RandomHEDJitter
from histolib.layers.self_attention import SelfAttention
from histolib.layers.thresholded import ThresholdedAttention
from histolib.layers.tiles import DihedralMean, TileImage
from histolib.layers.tokens import to_tokens

__all__ = [
    "AttentionMILPooling",
    "DifferentialAttention",
    "DihedralMean",
    "MaskedGlobalMaxPooling1D",
    "FoldedBatchNorm",
    "RandomFlips",
    "RandomHEDJitter",
    "SelfAttention",
    "ThresholdedAttention",
    "TileImage",
    "TrainingAugmentation",
    "lambda_init_for_depth",
    "to_tokens",
]
