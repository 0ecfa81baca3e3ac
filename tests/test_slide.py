"""Slide regions: reading SVS/TIFF, the tissue mask, the tile grid, batched scoring, drawing."""

import json
import socket
from pathlib import Path

import keras
import numpy as np
import pytest
import tifffile

from histolib import plots, slide
from histolib.data import regions
from histolib.files import md5sum

ROOT = Path(__file__).resolve().parents[1]
CMU = Path("he-region") / "CMU-1-Small-Region.svs"


def synthetic_region(h=300, w=400):
    """White glass with one pink-purple tissue rectangle, rows 96-288 and columns 0-192."""
    rng = np.random.default_rng(0)
    region = np.clip(rng.normal(242, 4, (h, w, 3)), 0, 255).astype(np.uint8)
    tissue = np.clip(rng.normal([200, 110, 170], 4, (192, 192, 3)), 0, 255).astype(np.uint8)
    region[96:288, :192] = tissue
    return region


class RedMeter(keras.layers.Layer):
    """Probability = mean of the red channel: a model whose answer for any tile is known."""

    def call(self, x):
        return keras.ops.mean(x[..., :1], axis=(1, 2))  # (batch, 1)


def red_model(softmax=False, size=96):
    inputs = keras.Input((size, size, 3))
    p = RedMeter()(inputs)
    outputs = keras.layers.Concatenate()([1.0 - p, p]) if softmax else p
    return keras.Model(inputs, outputs)


def test_real_svs_region(shared_data):
    region = regions.read_region(shared_data / CMU)
    assert region.shape == (2967, 2220, 3) and region.dtype == np.uint8  # 2220 wide, 2967 high
    thumbnail = regions.read_region(shared_data / CMU, series="Thumbnail")
    assert thumbnail.shape == (768, 574, 3)
    mask = regions.tissue_mask(region)
    assert 0.15 < mask.mean() < 0.5  # a tissue strip on glass
    assert mask[:200, :200].mean() < 0.05  # the top-left corner is glass
    saturation_mask = regions.tissue_mask(region, method="saturation")
    assert 0.15 < saturation_mask.mean() < 0.5
    assert regions.tile_grid(region.shape, stride=96) == (30, 23)
    assert regions.tile_grid(region.shape, stride=48) == (60, 45)


def test_real_region_heatmap_on_a_corner(shared_data):
    """A known-answer model over a 480 x 384 corner of the real region that holds tissue."""
    region = regions.read_region(shared_data / CMU)[2400:2880, 600:984]
    result = slide.heatmap(red_model(), region, stride=48, min_tissue=0.5)
    assert result.probability.shape == result.tissue.shape == (9, 7)
    scored = np.isfinite(result.probability)
    assert scored.sum() == (result.tissue >= 0.5).sum() > 0
    rows, cols = np.nonzero(scored)
    want = [region[r * 48:r * 48 + 96, c * 48:c * 48 + 96, 0].mean() / 255 for r, c in zip(rows, cols)]
    np.testing.assert_allclose(result.probability[scored], want, rtol=1e-5)


def test_synthetic_tiff_end_to_end(tmp_path):
    region = synthetic_region()
    path = tmp_path / "region.tif"
    tifffile.imwrite(path, region, photometric="rgb", tile=(64, 64), compression="zlib")
    read = regions.read_region(path)
    np.testing.assert_array_equal(read, region)

    mask = regions.tissue_mask(read)
    assert mask[96:288, :192].all() and not mask[:96].any()

    result = slide.heatmap(red_model(softmax=True), read, stride=48, batch_size=5)
    assert result.probability.shape == regions.tile_grid(region.shape, stride=48) == (5, 7)
    assert (result.tile, result.stride, result.shape) == (96, 48, (300, 400))
    # scored: the tiles at least a quarter tissue (the default min_tissue), and only those
    expected = result.tissue >= 0.25
    np.testing.assert_array_equal(np.isfinite(result.probability), expected)
    assert result.n_scored == expected.sum() and result.n_tiles == 35
    np.testing.assert_allclose(result.tissue[2, 0], 1.0)
    np.testing.assert_allclose(result.tissue[0, 0], 0.0)
    np.testing.assert_allclose(result.tissue[1, 0], 0.5)  # rows 48-144: half in tissue
    np.testing.assert_allclose(result.probability[2, 0], read[96:192, :96, 0].mean() / 255, rtol=1e-5)

    figure = slide.draw_heatmap(read, result, tmp_path / "heat.png")
    assert (tmp_path / "heat.png").stat().st_size > 1000
    assert len(figure.axes) == 3  # the region, the heatmap and the colour bar
    assert len(slide.draw_heatmap(read, result, show_region=False).axes) == 2


def _pixels(figure, axes) -> np.ndarray:
    """The rendered RGB pixels (floats in [0, 1]) inside ``axes`` of ``figure``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    image = np.asarray(canvas.buffer_rgba())[..., :3] / 255.0
    (x0, y0), (x1, y1) = axes.get_window_extent().get_points()
    height = image.shape[0]  # window coordinates count from the bottom
    return image[int(height - y1) + 2:int(height - y0) - 2, int(x0) + 2:int(x1) - 2]


def test_heatmap_colours_stand_apart_from_the_stain():
    """No pink or purple on the heatmap panel over pink-purple tissue, and an opaque colour bar."""
    from matplotlib.colors import hsv_to_rgb, rgb_to_hsv

    region = synthetic_region()  # tissue about (200, 110, 170): hue 320 degrees, pink-purple
    result = slide.heatmap(red_model(), region, stride=48)
    scored = np.isfinite(result.probability)
    result.probability[scored] = np.linspace(0.0, 1.0, scored.sum())  # the whole colour map
    figure = slide.draw_heatmap(region, result, downsample=1)
    stained, heat, bar = (rgb_to_hsv(_pixels(figure, ax)) for ax in figure.axes)

    def stain_like(hsv):
        """Share of coloured pixels in H&E's hues: haematoxylin's purple to eosin's pink."""
        return ((hsv[..., 0] > 255 / 360) & (hsv[..., 0] < 355 / 360) & (hsv[..., 1] > 0.15)).mean()

    assert stain_like(stained) > 0.2  # the left panel shows the stain, so the measure sees it
    assert stain_like(heat) < 0.001, "heatmap colours that look like the stain"
    # The bar's top and bottom are the map's own ends, not blended with white.
    top, bottom = bar[2, bar.shape[1] // 2], bar[-3, bar.shape[1] // 2]
    np.testing.assert_allclose(hsv_to_rgb(top), plots.OVERLAY_CMAP(1.0)[:3], atol=0.03)
    np.testing.assert_allclose(hsv_to_rgb(bottom), plots.OVERLAY_CMAP(0.0)[:3], atol=0.03)


def test_sigmoid_and_softmax_agree_and_no_tissue_scores_nothing():
    region = synthetic_region()
    sig = slide.heatmap(red_model(), region, stride=96)
    soft = slide.heatmap(red_model(softmax=True), region, stride=96)
    np.testing.assert_allclose(sig.probability, soft.probability, rtol=1e-6, equal_nan=True)
    blank = slide.heatmap(red_model(), np.full((200, 200, 3), 240, np.uint8), stride=96)
    assert blank.n_scored == 0 and np.isnan(blank.probability).all()


def test_tile_grid_and_fraction_known_answers():
    assert regions.tile_grid((96, 96), stride=96) == (1, 1)
    assert regions.tile_grid((191, 300), stride=96) == (1, 3)
    assert regions.tile_grid((10, 10), tile=4, stride=3) == (3, 3)
    mask = np.zeros((10, 10), bool)
    mask[:4, :4] = True
    fraction = regions.tissue_fraction(mask, tile=4, stride=3)
    np.testing.assert_allclose(fraction, [[1.0, 0.25, 0.0], [0.25, 1 / 16, 0.0], [0.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="shape=\\(50, 50\\)"):
        regions.tile_grid((50, 50))


def test_otsu_mask_splits_two_saturations():
    # Grey glass (saturation 0.02) and pink tissue (0.6): Otsu's cut falls between them.
    rng = np.random.default_rng(0)
    region = np.full((64, 64, 3), 235, np.uint8)
    region[:, :24] = (200, 80, 160)
    region = np.clip(region + rng.normal(0, 3, region.shape), 0, 255).astype(np.uint8)
    mask = regions.tissue_mask(region)
    assert mask[:, :24].all() and not mask[:, 24:].any()
    flat = np.full((16, 16, 3), 240, np.uint8)  # one class: nothing above the threshold
    assert not regions.tissue_mask(flat).any()


def test_otsu_mask_of_the_cmu_region_agrees_with_the_hand_written_one(shared_data):
    # Recorded with the hand-written Otsu this module had before scikit-image's (threshold 0.25,
    # 256 bins over [0, 1]): tissue on 27.854 % of the pixels, 265 tiles of 96 px with at least a
    # quarter tissue. scikit-image's histogram spans the values present; its cut (0.248) moves
    # 0.1 % of the pixels and no tile.
    region = regions.read_region(shared_data / CMU)
    mask = regions.tissue_mask(region)
    assert mask.mean() == pytest.approx(0.27854, abs=0.002)
    fraction = regions.tissue_fraction(mask, stride=96)
    assert ((fraction >= 0.25) & (fraction > 0)).sum() == 265


def test_clear_errors_name_the_file(tmp_path):
    missing = tmp_path / "nowhere.svs"
    with pytest.raises(FileNotFoundError, match="nowhere.svs"):
        regions.read_region(missing)
    text = tmp_path / "notes.svs"
    text.write_text("not a slide")
    with pytest.raises(ValueError, match="notes.svs is not one"):
        regions.read_region(text)
    grey = tmp_path / "grey.tif"
    tifffile.imwrite(grey, np.zeros((20, 20), np.uint8))
    with pytest.raises(ValueError, match="grey.tif.*shape=\\(20, 20\\)"):
        regions.read_region(grey)
    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb, np.zeros((20, 20, 3), np.uint8), photometric="rgb")
    with pytest.raises(ValueError, match="rgb.tif.*level=2"):
        regions.read_region(rgb, level=2)
    with pytest.raises(ValueError, match="rgb.tif.*series='Macro'"):
        regions.read_region(rgb, series="Macro")


def test_model_input_must_match_tiles():
    with pytest.raises(ValueError, match="square input"):
        slide.heatmap(keras.Sequential([keras.Input((96, 64, 3)), keras.layers.Flatten()]),
                      synthetic_region())
    with pytest.raises(ValueError, match="input size 96. Received: tile=64"):
        slide.heatmap(red_model(), synthetic_region(), tile=64)
    small = slide.heatmap(red_model(size=None), synthetic_region(), tile=64, stride=64)
    assert small.probability.shape == (4, 6) and small.tile == 64


def test_manifest_matches_the_module_and_the_shared_file(shared_data):
    manifest = json.loads((ROOT / "data" / "cmu_region.json").read_text())
    for key in ("filename", "url", "md5", "bytes"):
        assert manifest[key] == regions.CMU_REGION[key]
    path = shared_data / CMU
    assert path.stat().st_size == manifest["bytes"]
    assert md5sum(path) == manifest["md5"]


def test_download_keeps_a_checked_file_without_network(tmp_path, shared_data, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the network was touched")

    monkeypatch.setattr(socket, "create_connection", no_network)
    (tmp_path / "CMU-1-Small-Region.svs").write_bytes((shared_data / CMU).read_bytes())
    assert regions.download_cmu_region(tmp_path) == tmp_path / "CMU-1-Small-Region.svs"


def test_download_fails_fast_and_clearly_offline(tmp_path, monkeypatch):
    def offline(address, timeout):
        assert timeout <= 10
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", offline)
    with pytest.raises(ConnectionError, match="openslide.cs.cmu.edu.*by hand"):
        regions.download_cmu_region(tmp_path / "out")
    assert not (tmp_path / "out").exists()


# A successful, checksummed download and a refused corrupt one run against a local HTTP server in
# tests/test_files.py.
