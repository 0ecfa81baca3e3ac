"""The two synthetic generators, deterministic by ``seed`` and random-access by index.

Image ``i`` of a split is drawn from its own ``numpy.random.Generator`` seeded with ``(seed,
split, i)``. Colour follows the Beer-Lambert law with the Ruifrok-Johnston haematoxylin and
eosin optical density vectors. See :mod:`histolib.data.synthetic` for what the images show.
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

PCAM_SIZE = 96
"""Height and width of a synthetic PCam patch, as in PCam."""

SUBTYPE_SIZE = 96
"""Height and width of a synthetic subtype image (pass ``image_size=224`` to ``load`` for the
seed's input size)."""

SUBTYPE_COUNTS = {"HGSC": 1188, "EC": 733, "CC": 551, "MC": 323, "LGSC": 287}
"""Images per class in the ovarian seed's data set (3,082 in all)."""

SUBTYPE_CLASSES = sorted(SUBTYPE_COUNTS)
"""Class names in label order: sorted alphabetically like the seed (CC=0 ... MC=4)."""

_SPLIT_CODES = {"train": 0, "valid": 1, "test": 2}
_PCAM_STREAM = 0x9CA
_SUBTYPE_STREAM = 0x5B7

# Ruifrok & Johnston (2001) optical density vectors (R, G, B) of haematoxylin and eosin.
_H_OD = np.array([0.650, 0.704, 0.286])
_E_OD = np.array([0.072, 0.990, 0.105])
_GRID = np.arange(PCAM_SIZE, dtype=np.float64)


# ----------------------------------------------------------------------------- drawing helpers
def _one_blas_thread():
    """Small matrix products are 20x faster on one BLAS thread than on a busy pool."""
    return threadpool_limits(limits=1, user_api="blas")


def _upsample_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Linear interpolation weights ``(n_out, n_in)`` from ``n_in`` knots to ``n_out`` pixels."""
    pos = np.linspace(0, n_in - 1, n_out)
    lo = np.clip(np.floor(pos).astype(int), 0, n_in - 2)
    frac = pos - lo
    m = np.zeros((n_out, n_in))
    m[np.arange(n_out), lo] = 1 - frac
    m[np.arange(n_out), lo + 1] = frac
    return m


def _smooth_noise(rng: np.random.Generator, size: int, knots: int) -> np.ndarray:
    """Low-frequency noise ``(size, size)`` in [0, 1]: a ``knots`` x ``knots`` grid, interpolated."""
    u = _upsample_matrix(size, knots)
    return u @ rng.random((knots, knots)) @ u.T


def _blobs(ys, xs, sigma, amp, size: int) -> np.ndarray:
    """Sum of axis-aligned Gaussian nuclei ``(size, size)``; separable, so one matrix product."""
    grid = np.arange(size, dtype=np.float64)
    sy, sx = (sigma, sigma) if np.ndim(sigma) == 1 else sigma
    gy = np.exp(-((grid[:, None] - ys[None, :]) ** 2) / (2 * sy[None, :] ** 2)) * amp[None, :]
    gx = np.exp(-((grid[:, None] - xs[None, :]) ** 2) / (2 * sx[None, :] ** 2))
    return gy @ gx.T


def _compose(rng: np.random.Generator, haem: np.ndarray, eosin: np.ndarray,
             stain_jitter: float = 0.08, noise: float = 0.03) -> np.ndarray:
    """Stain amounts ``(h, w)`` -> uint8 RGB ``(h, w, 3)`` by Beer-Lambert with jittered vectors."""
    h_vec = _H_OD * (1 + stain_jitter * rng.standard_normal(3))
    e_vec = _E_OD * (1 + stain_jitter * rng.standard_normal(3))
    od = (haem[..., None] * h_vec + eosin[..., None] * e_vec).astype(np.float32)
    od += np.float32(noise) * rng.standard_normal(od.shape, dtype=np.float32)
    rgb = np.exp(np.float32(-np.log(10.0)) * np.maximum(od, 0.0))
    return np.clip(255.0 * rgb, 0, 255).astype(np.uint8)


def _nuclei_amount(field: np.ndarray, strength: float) -> np.ndarray:
    """Saturating haematoxylin amount from a summed nucleus field."""
    return strength * (1.0 - np.exp(-1.8 * field))


# ----------------------------------------------------------------------------- synthetic PCam
def _pcam_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), _PCAM_STREAM, _SPLIT_CODES[split], int(index)])


def pcam_label(index: int, seed: int = 0, split: str = "train") -> int:
    """Label of patch ``index``: pairs (2k, 2k+1) hold one patch of each class, so any even
    number of patches is exactly balanced."""
    pair_rng = np.random.default_rng([int(seed), _PCAM_STREAM + 1, _SPLIT_CODES[split], index // 2])
    return int((index % 2) ^ int(pair_rng.integers(2)))


def _lesion(rng: np.random.Generator, label: int):
    """Lesion mask ``(96, 96)`` bool obeying the PCam rule for ``label`` (None: no lesion)."""
    if label == 0 and rng.random() < 0.5:
        return None
    noise = _smooth_noise(rng, PCAM_SIZE, 5) - 0.5
    while True:
        ry, rx = rng.uniform(7, 17, size=2)
        theta = rng.uniform(0, np.pi)
        lo, hi = (22, 74) if label == 1 else (-8, 104)
        cy, cx = rng.uniform(lo, hi, size=2)
        dy, dx = _GRID[:, None] - cy, _GRID[None, :] - cx
        u = (dy * np.cos(theta) + dx * np.sin(theta)) / ry
        v = (-dy * np.sin(theta) + dx * np.cos(theta)) / rx
        mask = u**2 + v**2 + 0.6 * noise < 1.0
        touches_centre = mask[32:64, 32:64].any()
        if label == 1 and touches_centre and mask.sum() >= 40:
            return mask
        if label == 0 and not touches_centre and mask.sum() >= 80:
            return mask


def _pcam_one(seed: int, split: str, index: int):
    """One synthetic patch: uint8 ``(96, 96, 3)``, label, lesion mask bool ``(96, 96)``."""
    label = pcam_label(index, seed, split)
    rng = _pcam_rng(seed, split, index)
    size = PCAM_SIZE
    mask = _lesion(rng, label)
    # Lymphocytes: many small dark round nuclei, in clumps of varying density.
    density = _smooth_noise(rng, size, 4)
    k = int(rng.integers(90, 220))
    ys, xs = rng.uniform(-2, size + 2, size=(2, 3 * k))
    keep = rng.random(3 * k) < density[np.clip(ys, 0, size - 1).astype(int),
                                       np.clip(xs, 0, size - 1).astype(int)]
    ys, xs = ys[keep][:k], xs[keep][:k]
    lymph = _blobs(ys, xs, rng.uniform(0.9, 1.4, len(ys)), rng.uniform(0.7, 1.3, len(ys)), size)
    eosin = 0.12 + 0.22 * _smooth_noise(rng, size, 6)
    if mask is not None:
        # Tumour cells: large, paler (vesicular) nuclei with pink cytoplasm, pushing lymphocytes out.
        soft = _upsample_matrix(size, 24) @ mask[::4, ::4].astype(float) @ _upsample_matrix(size, 24).T
        lymph *= 1.0 - 0.9 * np.clip(soft, 0, 1)
        pix = np.flatnonzero(mask)
        n = max(3, int(mask.sum() / rng.uniform(28, 45)))
        pick = pix[rng.integers(0, len(pix), n)]
        ty, tx = pick // size + rng.uniform(-0.5, 0.5, n), pick % size + rng.uniform(-0.5, 0.5, n)
        sig = (rng.uniform(1.8, 3.0, n), rng.uniform(1.8, 3.0, n))
        tumour = _blobs(ty, tx, sig, rng.uniform(0.35, 0.7, n), size)
        eosin = eosin + 0.18 * mask
    else:
        tumour = 0.0
    haem = _nuclei_amount(lymph + tumour, rng.uniform(0.8, 1.15))
    # Occasional fat or empty space: paler tissue where a smooth field dips.
    if rng.random() < 0.3:
        gap = _smooth_noise(rng, size, 4) < rng.uniform(0.15, 0.3)
        haem, eosin = haem * np.where(gap, 0.1, 1.0), eosin * np.where(gap, 0.15, 1.0)
    image = _compose(rng, haem, eosin)
    return image, label, (mask if mask is not None else np.zeros((size, size), bool))


def pcam_patches(n: int, seed: int = 0, *, split: str = "train", start: int = 0):
    """Synthetic PCam patches ``start`` ... ``start + n - 1`` of ``split``.

    Args:
        n: number of patches.
        seed: data seed; the same ``(seed, split, index)`` always gives the same patch.
        split: ``"train"``, ``"valid"`` or ``"test"``; each split draws from its own stream, so
            the splits are disjoint.
        start: index of the first patch, for streaming a split in slices.

    Returns:
        images: uint8 ``(n, 96, 96, 3)``; labels: int32 ``(n,)`` (1 when the lesion touches the
        centre 32x32 region); masks: bool ``(n, 96, 96)``, the lesion (all False when none).
        ``load("synthetic-pcam", split, seed=seed)`` yields these very patches in this order.
    """
    if split not in _SPLIT_CODES:
        raise ValueError(f"split must be one of {list(_SPLIT_CODES)}. Received: split={split!r}")
    if n < 0 or start < 0:
        raise ValueError(f"n and start must be >= 0. Received: n={n}, start={start}")
    images = np.empty((n, PCAM_SIZE, PCAM_SIZE, 3), np.uint8)
    labels = np.empty((n,), np.int32)
    masks = np.empty((n, PCAM_SIZE, PCAM_SIZE), bool)
    with _one_blas_thread():
        for j in range(n):
            images[j], labels[j], masks[j] = _pcam_one(seed, split, start + j)
    return images, labels, masks


def pcam_images(indices, seed: int = 0, split: str = "train") -> np.ndarray:
    """Images only, uint8 ``(len(indices), 96, 96, 3)``, for arbitrary indices (streaming)."""
    images = np.empty((len(indices), PCAM_SIZE, PCAM_SIZE, 3), np.uint8)
    with _one_blas_thread():
        for j, i in enumerate(indices):
            images[j] = _pcam_one(seed, split, int(i))[0]
    return images


def pcam_labels(n: int, seed: int = 0, split: str = "train") -> np.ndarray:
    """Labels int32 ``(n,)`` of the first ``n`` patches of ``split``, without drawing images."""
    return np.array([pcam_label(i, seed, split) for i in range(n)], np.int32)


# ----------------------------------------------------------------------------- synthetic subtypes
def subtype_counts(total: int | None = None) -> dict[str, int]:
    """Images per class for ``total`` images in the seed's proportions (largest remainder).

    ``None`` gives the seed's own counts (3,082 images).
    """
    if total is None:
        return dict(SUBTYPE_COUNTS)
    if total < len(SUBTYPE_COUNTS):
        raise ValueError(f"total must be at least {len(SUBTYPE_COUNTS)}. Received: total={total}")
    full = sum(SUBTYPE_COUNTS.values())
    exact = {c: total * k / full for c, k in SUBTYPE_COUNTS.items()}
    counts = {c: max(1, int(v)) for c, v in exact.items()}
    for c in sorted(exact, key=lambda c: exact[c] - int(exact[c]), reverse=True):
        if sum(counts.values()) >= total:
            break
        counts[c] += 1
    return counts


def subtype_table(total: int | None = None, seed: int = 0):
    """Labels and patient keys of the synthetic subtype set, without drawing images.

    Returns:
        labels: int32 ``(n,)`` indices into :data:`SUBTYPE_CLASSES`; patients: str ``(n,)``
        such as ``"P017"``. Each patient holds 6 to 30 images of a single subtype; patient
        numbers are shuffled so they do not give the class away.
    """
    rng = np.random.default_rng([int(seed), _SUBTYPE_STREAM + 1])
    labels, owners = [], []
    for label, name in enumerate(SUBTYPE_CLASSES):
        left, patient = subtype_counts(total)[name], 0
        while left > 0:
            take = min(left, int(rng.integers(6, 31)))
            labels += [label] * take
            owners += [(label, patient)] * take
            left -= take
            patient += 1
    order = rng.permutation(len(labels))
    unique = sorted(set(owners))
    number = dict(zip(unique, rng.permutation(len(unique))))
    patients = np.array([f"P{number[o]:03d}" for o in owners])[order]
    return np.asarray(labels, np.int32)[order], patients


def _patient_style(seed: int, patient: str):
    """Per-patient stain strength, stain-vector jitter seed and tissue scale."""
    rng = np.random.default_rng([int(seed), _SUBTYPE_STREAM + 2, int(patient[1:])])
    return {"haem": rng.uniform(0.8, 1.2), "eosin": rng.uniform(0.75, 1.25),
            "scale": rng.uniform(0.85, 1.15), "tint": rng.uniform(-0.06, 0.06, size=3)}


def _ring_points(rng, cy, cx, r, spacing):
    n = max(6, int(2 * np.pi * r / spacing))
    a = np.linspace(0, 2 * np.pi, n, endpoint=False) + rng.uniform(0, 2 * np.pi)
    rr = r + rng.normal(0, 0.8, n)
    return cy + rr * np.sin(a), cx + rr * np.cos(a)


def _tissue(name: str, rng, grid, eosin) -> tuple:
    """The architecture of one class: ``(field, white, eosin)`` on the ``(yy, xx, size, scale)``
    ``grid``: nuclei density, empty (white) space, and the eosin map it changes."""
    yy, xx, size, s = grid
    white = np.zeros((size, size))
    if name == "HGSC":  # solid sheets of crowded, large, pleomorphic nuclei; slit-like spaces
        n = int(rng.integers(70, 110) / s**2)
        ys, xs = rng.uniform(0, size, (2, n))
        sig = (rng.uniform(1.6, 3.4, n) * s, rng.uniform(1.6, 3.4, n) * s)
        field = _blobs(ys, xs, sig, rng.uniform(0.6, 1.3, n), size)
        white += np.abs(np.sin((yy * rng.uniform(0.05, 0.1) + xx * 0.03 + rng.uniform(0, 6)))) < 0.06
    elif name == "LGSC":  # papillae: small uniform nuclei along wavy bands, pink cores, space around
        field = np.zeros((size, size))
        for _ in range(int(rng.integers(3, 6))):
            y0, f, ph = rng.uniform(0, size), rng.uniform(0.05, 0.12), rng.uniform(0, 6)
            xs = np.arange(0, size, 3.5 * s) + rng.uniform(0, 3)
            ys = y0 + 10 * np.sin(f * xs + ph) + rng.normal(0, 0.7, len(xs))
            field += _blobs(ys, xs, np.full(len(xs), 1.4 * s), rng.uniform(0.7, 1.0, len(xs)), size)
        white += field < 0.05
        white *= _smooth_noise(rng, size, 4) > 0.45
    elif name == "EC":  # glands: lumens lined by a ring of stratified nuclei
        field = np.zeros((size, size))
        for _ in range(int(rng.integers(3, 7))):
            cy, cx = rng.uniform(8, size - 8, 2)
            r = rng.uniform(6, 13) * s
            white += (yy - cy) ** 2 + (xx - cx) ** 2 < (0.7 * r) ** 2
            ys, xs = _ring_points(rng, cy, cx, r, 3.2 * s)
            field += _blobs(ys, xs, np.full(len(ys), 1.8 * s), rng.uniform(0.7, 1.1, len(ys)), size)
    elif name == "CC":  # clear cells: polygonal cells with empty cytoplasm, thin pink membranes
        pitch = rng.uniform(9, 13) * s
        gy, gx = np.mgrid[0:size + pitch:pitch, 0:size + pitch:pitch].reshape(2, -1)
        gy = gy + rng.normal(0, 1.2, gy.shape) + (np.arange(gy.size) % 2) * pitch / 2
        gx = gx + rng.normal(0, 1.2, gx.shape)
        field = _blobs(gy, gx, np.full(gy.size, 1.7 * s), rng.uniform(0.8, 1.2, gy.size), size)
        d = np.sqrt((yy[..., None] - gy) ** 2 + (xx[..., None] - gx) ** 2)
        d.sort(axis=-1)
        membrane = (d[..., 1] - d[..., 0]) < 1.2
        white += ~membrane
        eosin = eosin + 0.25 * membrane
    else:  # MC: pale mucin lakes with a thin line of small basal nuclei along gland edges
        field = np.zeros((size, size))
        mucin = _smooth_noise(rng, size, 3) > rng.uniform(0.35, 0.5)
        white += mucin
        for _ in range(int(rng.integers(2, 4))):
            x0, f, ph = rng.uniform(0, size), rng.uniform(0.03, 0.08), rng.uniform(0, 6)
            ys = np.arange(0, size, 2.6 * s) + rng.uniform(0, 2)
            xs = x0 + 14 * np.sin(f * ys + ph) + rng.normal(0, 0.4, len(ys))
            field += _blobs(ys, xs, (np.full(len(ys), 1.0 * s), np.full(len(ys), 2.2 * s)),
                            rng.uniform(0.6, 0.9, len(ys)), size)
        eosin = eosin * np.where(mucin, 0.3, 1.0)
    return field, white, eosin


def _subtype_one(seed: int, index: int, label: int, patient: str) -> np.ndarray:
    """One synthetic subtype image, uint8 ``(96, 96, 3)``."""
    rng = np.random.default_rng([int(seed), _SUBTYPE_STREAM, int(index)])
    style = _patient_style(seed, patient)
    size, s = SUBTYPE_SIZE, style["scale"]
    yy, xx = np.meshgrid(_GRID[:size], _GRID[:size], indexing="ij")
    name = SUBTYPE_CLASSES[label]
    eosin = 0.18 + 0.2 * _smooth_noise(rng, size, 5)
    field, white, eosin = _tissue(name, rng, (yy, xx, size, s), eosin)
    white = np.clip(white, 0, 1)
    haem = _nuclei_amount(field, style["haem"])
    if name == "MC":
        haem = haem + 0.12 * white  # mucin takes up a faint blue-grey tint
    eosin = style["eosin"] * eosin * (1 - 0.85 * white)
    image = _compose(rng, haem, eosin, stain_jitter=0.05).astype(np.float64)
    image *= 1 + style["tint"]
    return np.clip(image, 0, 255).astype(np.uint8)


def subtype_images(indices=None, *, total: int | None = None, seed: int = 0):
    """Synthetic ovarian-subtype images.

    Args:
        indices: which images (default: all); any order, repeats allowed.
        total: size of the whole set, split in the seed's proportions (default: the seed's 3,082).
        seed: data seed.

    Returns:
        images: uint8 ``(n, 96, 96, 3)``; labels: int32 ``(n,)`` into :data:`SUBTYPE_CLASSES`
        (CC, EC, HGSC, LGSC, MC); patients: str ``(n,)``.
    """
    labels, patients = subtype_table(total, seed)
    idx = np.arange(len(labels)) if indices is None else np.asarray(indices, dtype=np.int64)
    images = np.empty((len(idx), SUBTYPE_SIZE, SUBTYPE_SIZE, 3), np.uint8)
    with _one_blas_thread():
        for j, i in enumerate(idx):
            images[j] = _subtype_one(seed, int(i), int(labels[i]), str(patients[i]))
    return images, labels[idx], patients[idx]
