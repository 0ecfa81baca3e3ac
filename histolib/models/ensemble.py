"""``build_ensemble``: several trained models as one, averaging their probabilities.

An ensemble of models trained with different seeds usually scores better than its members
(their errors differ), and one ``.keras`` file keeps it usable wherever a single model is: the
command's ``evaluate`` and ``heatmap``, `histolib.evaluate.predict` with test-time augmentation,
``keras.saving.load_model(..., safe_mode=True)`` after ``import histolib``.
"""

from __future__ import annotations

import keras


def build_ensemble(members, *, name: str = "ensemble") -> keras.Model:
    """One model whose output is the mean of ``members``' outputs.

    Each member becomes a nested model named ``member0``, ``member1``, ... (sharing the member's
    layers and weights, so no copy is trained or changed); the shared input feeds them all and a
    ``keras.layers.Average`` named ``mean`` averages their probabilities. Averaging probabilities
    (not logits) keeps every builder's output convention (`histolib.models.outputs`): sigmoid
    ``(batch, 1)`` members give a sigmoid-like ``(batch, 1)``, softmax ``(batch, k)`` members a
    ``(batch, k)`` whose rows sum to 1.

    Args:
        members: two or more Keras models with one input of the same shape and one output of
            the same shape, probabilities.
        name: the ensemble's name.

    Returns:
        A ``keras.Model`` from ``(batch, h, w, c)`` to the members' output shape, in float32.

    Raises:
        ValueError: for fewer than two members, or members whose input or output shapes differ.
    """
    members = list(members)
    if len(members) < 2:
        raise ValueError(f"an ensemble needs at least two members. Received: {len(members)} member(s)")
    shapes = {(tuple(m.inputs[0].shape[1:]), tuple(m.outputs[0].shape[1:])) for m in members}
    if len(shapes) != 1 or any(len(m.inputs) != 1 or len(m.outputs) != 1 for m in members):
        raise ValueError("ensemble members need one input and one output, each of one shape. "
                         f"Received: (input, output) shapes {sorted(shapes)}")
    (input_shape, _), = shapes
    inputs = keras.Input(input_shape, name="image")
    outputs = [keras.Model(m.inputs[0], m.outputs[0], name=f"member{i}")(inputs) for i, m in enumerate(members)]
    mean = keras.layers.Average(dtype="float32", name="mean")(outputs)
    return keras.Model(inputs, mean, name=name)
