"""Built-in synthetic data with known answers, and writers that save it in every real format.

Two generators, both deterministic by ``seed`` and random-access by index (image ``i`` of a
split is drawn from its own ``numpy.random.Generator`` seeded with ``(seed, split, i)``), so a
loader can stream any slice, shuffle or oversample without ever holding a split in memory, and
the train, valid and test splits of ``synthetic-pcam`` are disjoint by construction:

- :func:`~histolib.data.synthetic.generators.pcam_patches`: 96x96 H&E-coloured lymph-node-like patches. Label 1 when a tumour-like
  cluster of large, pale nuclei touches the centre 32x32 region (the PCam rule); a label-0 patch
  has no cluster (half of them) or one that lies wholly outside the centre (the other half), so a
  model must look at *where* the cluster is, not only whether there is one. The lesion masks
  come back too, so saliency maps can be scored against them.
- :func:`~histolib.data.synthetic.generators.subtype_images`: five ovarian-carcinoma-like textures (sheets of large pleomorphic
  nuclei, low-grade papillae, glands around lumens, clear cells, mucin with basal nuclei) in the
  seed's proportions HGSC 1188 : EC 733 : CC 551 : MC 323 : LGSC 287, with a patient key: each
  patient has one subtype and its own stain and scale, so a split that lets a patient span train
  and test is optimistic.

Colour follows the Beer-Lambert law with the Ruifrok-Johnston haematoxylin and eosin optical
density vectors, so the HED stain jitter of the ``"pcam"`` augmentation acts on real stain axes.

Sizes, chosen for a two-minute quick profile: ``synthetic-pcam`` has 4,096 / 512 / 512 patches
(train / valid / test), ``synthetic-pcam:N`` makes train N and valid, test N // 8 each (PCam's
ratio), ``synthetic-pcam:T,V,S`` sets each; ``synthetic-subtype`` has the seed's 3,082 images,
``synthetic-subtype:N`` N images in the same proportions. Images are 96x96 (``load(...,
image_size=224)`` resizes). A patch costs a few milliseconds to draw, so splits of up to
:data:`~histolib.data.synthetic.selection.MEMO_LIMIT` images are kept once drawn (filled lazily, batch by batch) and larger ones are
drawn afresh on every pass, never held whole.

Difficulty, measured on this 2-core CPU while other jobs shared it (a 4-layer CNN, 16-64
filters, Adam, batch 64, no augmentation): ``synthetic-pcam`` reached 0.87 validation accuracy
after one epoch and 0.92 after three (about a minute); ``synthetic-subtype`` at 64x64 reached 0.45,
0.60, 0.76 and 0.92 after epochs one to four (about 70 s). Learnable, not trivial.

Writers (:func:`~histolib.data.synthetic.formats.write_pcam_h5`, :func:`~histolib.data.synthetic.formats.write_folder`, :func:`~histolib.data.synthetic.formats.write_kaggle`) save arrays in the
layouts the loaders read, so each loader is tested on real files.

One module per job: :mod:`~histolib.data.synthetic.generators` draws the images,
:mod:`~histolib.data.synthetic.formats` writes them in the real formats, and
:mod:`~histolib.data.synthetic.selection` serves them to ``histolib.data.load`` (split sizes,
the in-memory store, the ``synthetic-pcam`` and ``synthetic-subtype`` sources).
"""

from histolib.data.synthetic.formats import write_folder, write_image, write_kaggle, write_pcam_h5
from histolib.data.synthetic.generators import (
    PCAM_SIZE,
    SUBTYPE_CLASSES,
    SUBTYPE_COUNTS,
    SUBTYPE_SIZE,
    pcam_images,
    pcam_label,
    pcam_labels,
    pcam_patches,
    subtype_counts,
    subtype_images,
    subtype_table,
)
from histolib.data.synthetic.selection import (
    MEMO_LIMIT,
    PCAM_DEFAULT_SIZES,
    parse_pcam_sizes,
    pcam_selection,
    subtype_selection,
)

__all__ = [
    "MEMO_LIMIT",
    "PCAM_DEFAULT_SIZES",
    "PCAM_SIZE",
    "SUBTYPE_CLASSES",
    "SUBTYPE_COUNTS",
    "SUBTYPE_SIZE",
    "parse_pcam_sizes",
    "pcam_images",
    "pcam_label",
    "pcam_labels",
    "pcam_patches",
    "pcam_selection",
    "subtype_counts",
    "subtype_images",
    "subtype_selection",
    "subtype_table",
    "write_folder",
    "write_image",
    "write_kaggle",
    "write_pcam_h5",
]
