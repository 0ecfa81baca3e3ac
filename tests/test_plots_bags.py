"""histolib.plots.bag_attention and bag_tiles: the weights land on the right pixels and tiles."""

import numpy as np
import pytest
from matplotlib.figure import Figure

from histolib import plots


def test_bag_attention_paints_each_tile_with_its_relative_weight():
    image = np.zeros((100, 150, 3), np.uint8)
    boxes = np.array([[0, 0, 50, 50], [0, 40, 50, 50], [50, 100, 50, 50]])  # the first two overlap
    scores = np.array([0.5, 0.2, 0.3])
    figure = plots.bag_attention(image, boxes, scores, title="three tiles")
    assert isinstance(figure, Figure)
    weight = figure.axes[1].get_images()[1].get_array()
    assert weight[10, 10] == pytest.approx(1.5) and weight[10, 85] == pytest.approx(0.6)
    assert weight[10, 45] == pytest.approx(1.5)  # overlap: the larger weight
    assert weight[75, 120] == pytest.approx(0.9)
    assert np.ma.is_masked(weight[75, 10])  # no tile there
    assert figure.axes[1].get_title() == "three tiles"
    with pytest.raises(ValueError, match="one score per box"):
        plots.bag_attention(image, boxes, scores[:2])


def test_bag_tiles_order_by_attention_and_frame_the_positive_tiles():
    tiles = np.stack([np.full((8, 8, 3), v, np.uint8) for v in (10, 20, 30)])
    figure = plots.bag_tiles(tiles, [0.2, 0.7, 0.1], labels=[0, 1, 0], columns=2)
    shown = [ax for ax in figure.axes if ax.get_images()]
    assert [ax.get_title() for ax in shown] == ["2.10", "0.60", "0.30"]
    assert shown[0].get_images()[0].get_array()[0, 0, 0] == 20
    assert [ax.spines["left"].get_visible() for ax in shown] == [True, False, False]
    assert len(figure.axes) == 4  # two rows of two, the last one blank
