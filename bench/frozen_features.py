"""Frozen-backbone training: the whole model every step against a head on cached features.

On the real ovarian images (``../shared/data/ovarian``, the near-duplicate-grouped training
split, 224 px, batch 16) with ``mobilenet_025+thresholded`` and ImageNet weights
(``$HISTOLIB_WEIGHTS_DIR``, default ``../shared/weights``), times:

- the whole model trained with ``subtype`` augmentation in tf.data: seconds per epoch (epochs
  after the first, which traces);
- :func:`histolib.frozen.feature_views` computing the backbone once for 8 views of each image
  (no cache), and the head trained on :func:`histolib.frozen.view_dataset`: seconds per epoch;

and reports the speed-up for one 20-epoch run and for five such runs over the same features
(training seeds), the second reading the features from the cache. ``--quick``: 48 images, 2
views, 2 epochs each.

    python bench/frozen_features.py [--quick] [--epochs N] [--out JSON]
"""

from __future__ import annotations

import os
import sys
import time

try:
    from bench import _common as common
except ImportError:  # run as `python bench/frozen_features.py`
    import _common as common

os.environ.setdefault("HISTOLIB_WEIGHTS_DIR", str(common.SHARED_DATA.parent / "weights"))
MODEL, SIZE, BATCH = "mobilenet_025+thresholded", 224, 16


class _EpochTimes:
    def __init__(self):
        import keras

        class Callback(keras.callbacks.Callback):
            def on_epoch_begin(cb, epoch, logs=None):
                cb.start = time.perf_counter()

            def on_epoch_end(cb, epoch, logs=None):
                self.seconds.append(time.perf_counter() - cb.start)

        self.seconds, self.callback = [], Callback()


def _train(model, train, epochs):
    timer = _EpochTimes()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(train, epochs=epochs, verbose=0, callbacks=[timer.callback])
    return timer.seconds[1:] or timer.seconds


def measure(root, *, epochs: int, views: int, limit: int | None) -> dict:
    import numpy as np

    from histolib import data, frozen
    from histolib.models import build_model

    spec, load = f"folder:{root}", dict(image_size=SIZE, group_by="near-duplicates", seed=0)
    plain = data.load(spec, "train", batch_size=BATCH, **load)
    if limit:
        plain = plain.take(limit // BATCH)
    n = sum(int(y.shape[0]) for _, y in plain)
    augmented = data.load(spec, "train", batch_size=BATCH, shuffle=True, augment="subtype", **load)
    if limit:
        augmented = augmented.take(limit // BATCH)
    whole = _train(build_model(MODEL, num_classes=5, input_shape=(SIZE, SIZE, 3), weights="imagenet"),
                   augmented, epochs)
    model = build_model(MODEL, num_classes=5, input_shape=(SIZE, SIZE, 3), weights="imagenet")
    backbone, head = frozen.split_frozen(model)
    start = time.perf_counter()
    features = frozen.feature_views(backbone, plain, views=views, augment="subtype", seed=0, use_cache=False)
    compute = time.perf_counter() - start
    labels = np.concatenate([np.asarray(y) for _, y in plain])
    head_epochs = _train(head, frozen.view_dataset(features, labels, batch_size=BATCH, shuffle=True), epochs)
    per_whole, per_head = float(np.median(whole)), float(np.median(head_epochs))
    one_run = 20 * per_whole / (compute + 20 * per_head)
    five_runs = 100 * per_whole / (compute + 100 * per_head)
    return {"images": n, "views": views, "whole_epoch_s": whole, "head_epoch_s": head_epochs,
            "features_s": round(compute, 2), "speedup_20_epochs": round(one_run, 1),
            "speedup_5_runs_of_20": round(five_runs, 1),
            "rows": [
                {"what": f"whole model, subtype augmentation ({n} images)", "unit": "s/epoch",
                 **common.summarize(whole), "note": f"{MODEL} {SIZE}px batch {BATCH}"},
                {"what": f"backbone features, {views} views (once)", "unit": "s",
                 **common.summarize([compute]), "note": f"{n * views} backbone passes"},
                {"what": "head on cached features", "unit": "s/epoch", **common.summarize(head_epochs),
                 "note": f"speed-up {one_run:.1f}x for 20 epochs, {five_runs:.1f}x for 5 runs of 20"},
            ]}


def main(argv=None) -> int:
    p = common.parser(__doc__, "frozen_features")
    p.add_argument("--data", default=str(common.SHARED_DATA / "ovarian"), help="the ovarian folder")
    p.add_argument("--epochs", type=int, default=None, help="epochs timed per variant (default 3; 2 with --quick)")
    args = p.parse_args(argv)
    if not os.path.isdir(args.data):
        print(f"no ovarian folder at {args.data}", file=sys.stderr)
        return 2
    load = common.load_average()
    record = measure(args.data, epochs=args.epochs or (2 if args.quick else 3), views=2 if args.quick else 8,
                     limit=48 if args.quick else None)
    return common.finish(record, args, load)


if __name__ == "__main__":
    sys.exit(main())
