"""`fit_replicated`: a plain ``strategy.run`` training loop that works under every TensorFlow
strategy, MultiWorkerMirroredStrategy included (where Keras 3's ``fit`` fails)."""

from __future__ import annotations

import keras
import tensorflow as tf


def fit_replicated(
    model: keras.Model,
    dataset: tf.data.Dataset,
    *,
    epochs: int = 1,
    strategy: tf.distribute.Strategy | None = None,
) -> list[float]:
    """Train a compiled ``model`` with a ``strategy.run`` loop; works under any strategy.

    The model must be built and compiled (with one loss, e.g.
    ``histolib.models.loss_for(model)``, and an optimizer) inside ``strategy.scope()``. Each
    replica computes its per-example losses, averages them over the *global* batch
    (``tf.nn.compute_average_loss``), adds its share of the regularisation losses, and the
    optimizer all-reduces the gradients, so every replica applies the same update.

    Args:
        model: the compiled model.
        dataset: global batches ``(images, labels)`` of a static size, as `make_tpu_safe`
            gives them.
        epochs: passes over ``dataset``.
        strategy: the strategy the model was built under; ``None`` for the current one.

    Returns:
        The mean training loss of each epoch (regularisation included), a list of floats.

    Raises:
        ValueError: for a model compiled without a loss or optimizer, or a dataset whose
            batch size is not static.
    """
    strategy = strategy or tf.distribute.get_strategy()
    if getattr(model, "optimizer", None) is None or getattr(model, "loss", None) is None:
        raise ValueError(
            "fit_replicated needs a model compiled with an optimizer and a loss. "
            f"Received: model.loss={getattr(model, 'loss', None)!r}"
        )
    global_batch = dataset.element_spec[1].shape[0]
    if global_batch is None:
        raise ValueError(
            "fit_replicated needs batches of a static size; pass the dataset through "
            f"make_tpu_safe. Received: labels shape={dataset.element_spec[1].shape}"
        )
    loss = keras.losses.get(model.loss)
    per_example = loss.call if isinstance(loss, keras.losses.Loss) else loss
    with strategy.scope():
        model.optimizer.build(model.trainable_variables)
    distributed = strategy.experimental_distribute_dataset(dataset)

    def replica_step(images, labels):
        with tf.GradientTape() as tape:
            probs = model(images, training=True)
            if probs.shape[-1] == 1 and labels.shape.rank == 1:  # sigmoid (b, 1), labels (b,)
                labels = tf.expand_dims(labels, -1)
            value = tf.nn.compute_average_loss(
                per_example(labels, probs), global_batch_size=global_batch
            )
            if model.losses:
                value += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
        grads = tape.gradient(value, model.trainable_variables)
        model.optimizer.apply(grads, model.trainable_variables)
        return value

    @tf.function
    def step(batch):
        per_replica = strategy.run(replica_step, args=batch)
        return strategy.reduce("SUM", per_replica, axis=None)

    history = []
    for _ in range(epochs):
        losses = [float(step(batch)) for batch in distributed]
        history.append(sum(losses) / len(losses))
    return history
