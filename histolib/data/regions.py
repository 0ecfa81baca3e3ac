"""Slide regions as data: read a region, find its tissue, lay tiles over it.

A region of a whole-slide image is read with tifffile (with imagecodecs for the JPEG tiles inside
Aperio SVS files), so no OpenSlide is needed. Coordinates are ``(row, column)`` in pixels of the
level read; a region is ``(h, w, 3)`` uint8. The real region ``CMU-1-Small-Region.svs``
(OpenSlide test data, CC0) is 2220 pixels wide and 2967 high: `read_region` gives
``(2967, 2220, 3)``; `download_cmu_region` fetches it. Tiles of a region feed the slide heatmap
(:mod:`histolib.slide`) and the bags of multiple-instance learning (:mod:`histolib.data.bags`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from skimage.filters import threshold_otsu

from histolib.files import download

__all__ = ["CMU_REGION", "download_cmu_region", "read_region", "tile_grid", "tissue_fraction", "tissue_mask"]

#: The public OpenSlide test region (also recorded in ``data/cmu_region.json``).
CMU_REGION = {
    "filename": "CMU-1-Small-Region.svs",
    "url": "https://openslide.cs.cmu.edu/download/openslide-testdata/Aperio/CMU-1-Small-Region.svs",
    "md5": "1ad6e35c9d17e4d85fb7e3143b328efe",
    "bytes": 1938955,
}


def read_region(path, *, level: int = 0, series: int | str = 0) -> np.ndarray:
    """Read an RGB region from an SVS or TIFF file.

    Args:
        path: an Aperio ``.svs`` or a (pyramidal or plain) ``.tif``/``.tiff``.
        level: pyramid level within the series, 0 = full resolution.
        series: index or name of the TIFF series; in an SVS, 0 is the slide (``"Baseline"``),
            and ``"Thumbnail"``, ``"Label"`` and ``"Macro"`` are the small images beside it.

    Returns:
        ``(h, w, 3)`` uint8 (an alpha channel is dropped).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a TIFF-family file, no such series or level, or not 8-bit RGB; the message
            names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Slide region not found: {path}")
    try:
        with tifffile.TiffFile(path) as tif:
            names = [s.name for s in tif.series]
            index = names.index(series) if isinstance(series, str) and series in names else series
            if not isinstance(index, int) or not 0 <= index < len(tif.series):
                raise ValueError(
                    f"{path} has series {list(enumerate(names))}. Received: series={series!r}"
                )
            levels = tif.series[index].levels
            if not 0 <= level < len(levels):
                raise ValueError(
                    f"{path} series {names[index]!r} has levels 0..{len(levels) - 1} with shapes "
                    f"{[lv.shape for lv in levels]}. Received: level={level!r}"
                )
            region = levels[level].asarray()
    except tifffile.TiffFileError as error:
        raise ValueError(f"Expected an SVS or TIFF slide region; {path} is not one ({error})") from error
    if region.ndim != 3 or region.shape[-1] not in (3, 4) or region.dtype != np.uint8:
        raise ValueError(
            f"Expected an 8-bit RGB image (h, w, 3) uint8 in {path}. "
            f"Received: shape={region.shape}, dtype={region.dtype}"
        )
    return np.ascontiguousarray(region[..., :3])


def tissue_mask(region, *, method: str = "otsu", threshold: float | None = None) -> np.ndarray:
    """Tissue pixels of an RGB region, by colour saturation.

    H&E-stained tissue is coloured; glass, and the white around it, is grey. The HSV saturation
    ``(max - min) / max`` of each pixel is thresholded: at Otsu's threshold of the region's own
    saturation histogram (``method="otsu"``: scikit-image's ``threshold_otsu``, 256 bins over the
    values present), or at a fixed ``threshold`` (``method="saturation"``, default 0.07).

    Args:
        region: ``(h, w, 3)`` uint8.

    Returns:
        ``(h, w)`` bool, True on tissue.
    """
    region = np.asarray(region)
    if region.ndim != 3 or region.shape[-1] != 3 or region.dtype != np.uint8:
        raise ValueError(
            "Expected a region (h, w, 3) uint8. "
            f"Received: region.shape={region.shape}, dtype={region.dtype}"
        )
    if method not in ("otsu", "saturation"):
        raise ValueError(f"Expected method 'otsu' or 'saturation'. Received: method={method!r}")
    red, green, blue = region[..., 0], region[..., 1], region[..., 2]
    high = np.maximum(np.maximum(red, green), blue)  # 20x faster than region.max(axis=-1)
    spread = high - np.minimum(np.minimum(red, green), blue)
    saturation = spread.astype(np.float32) / np.maximum(high, 1).astype(np.float32)
    if method == "otsu":
        cut = threshold_otsu(saturation) if threshold is None else threshold
    else:
        cut = 0.07 if threshold is None else threshold
    return saturation > cut


def tile_grid(shape, *, tile: int = 96, stride: int = 96) -> tuple[int, int]:
    """Rows and columns of whole ``tile x tile`` tiles at ``stride`` in a region of ``shape``.

    Tile ``(i, j)`` covers rows ``i * stride`` to ``i * stride + tile``; a partial tile at the
    right or bottom edge is left out. The 2967 x 2220 CMU region gives 30 x 23 tiles at stride
    96 and 60 x 45 at stride 48.
    """
    if tile < 1 or stride < 1:
        raise ValueError(f"Expected positive tile and stride. Received: tile={tile}, stride={stride}")
    h, w = shape[:2]
    if h < tile or w < tile:
        raise ValueError(f"Expected a region of at least {tile} x {tile} pixels. Received: shape={tuple(shape)}")
    return (h - tile) // stride + 1, (w - tile) // stride + 1


def tissue_fraction(mask, *, tile: int = 96, stride: int = 96) -> np.ndarray:
    """Fraction of tissue pixels in every tile, ``(rows, cols)`` float32 in [0, 1].

    Running sums down the columns give each band of tile rows, running sums along each band give
    each tile, so the cost does not grow with the tile size.
    """
    mask = np.asarray(mask, dtype=bool)
    rows, cols = tile_grid(mask.shape, tile=tile, stride=stride)
    down = np.zeros((mask.shape[0] + 1, mask.shape[1]), np.int32)
    np.cumsum(mask, axis=0, dtype=np.int32, out=down[1:])
    top = np.arange(rows) * stride
    band = down[top + tile] - down[top]  # (rows, w): tissue pixels per column in each band
    along = np.zeros((rows, mask.shape[1] + 1), np.int32)
    np.cumsum(band, axis=1, out=along[:, 1:])
    left = np.arange(cols) * stride
    return ((along[:, left + tile] - along[:, left]) / float(tile * tile)).astype(np.float32)


def download_cmu_region(out_dir, *, timeout: float = 10.0) -> Path:
    """Download ``CMU-1-Small-Region.svs`` (OpenSlide test data, CC0, 1.9 MB), MD5-checked.

    A file already there with the right MD5 is kept and not downloaded again. Offline, this fails
    within seconds with a ``ConnectionError`` saying where to get the file by hand.

    Returns:
        the path of the checked file in ``out_dir``.

    Raises:
        ConnectionError: the server cannot be reached, or the download fails.
        ValueError: the downloaded file's MD5 is not the expected one (nothing is left behind).
    """
    url, md5 = CMU_REGION["url"], CMU_REGION["md5"]
    return download(url, Path(out_dir) / CMU_REGION["filename"], md5=md5, timeout=timeout,
                    by_hand=f"Download {url} by hand into {out_dir} (MD5 {md5}).")
