"""examples/draw_preprocess.py: a drawing becomes a 28×28 input the way MNIST's digits were made."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

from draw_preprocess import area_weights, preprocess  # noqa: E402

#: A 7 as a person draws it: one stroke, in units of a 100×100 box.
SEVEN = [(20, 12), (50, 11), (82, 10), (70, 32), (55, 60), (44, 92)]
ZERO = [(50 + 24 * np.cos(a), 52 + 38 * np.sin(a)) for a in np.linspace(0, 2 * np.pi, 30)]


def render(stroke, scale: float, offset=(0, 0), width: float = 8, canvas=(400, 400)):
    """A stroke drawn on a canvas as a browser draws it: a round-capped line of ``width``
    (scaled too), its edges anti-aliased by how much of each pixel it covers.

    Args:
        stroke: points (x, y) in units of a 100×100 box.
        scale: canvas pixels per unit.
        offset: (x, y) of the box's corner on the canvas, in canvas pixels.
        width: the line's width in units.
        canvas: (height, width) in pixels.

    Returns:
        shape ``canvas``, ink in [0, 1].
    """
    ys, xs = np.mgrid[: canvas[0], : canvas[1]] + 0.5  # pixel centres
    distance = np.full(canvas, np.inf)
    points = [(offset[0] + scale * x, offset[1] + scale * y) for x, y in stroke]
    for (ax, ay), (bx, by) in zip(points, points[1:]):
        dx, dy = bx - ax, by - ay
        t = np.clip(((xs - ax) * dx + (ys - ay) * dy) / max(dx * dx + dy * dy, 1e-12), 0, 1)
        distance = np.minimum(distance, np.hypot(xs - ax - t * dx, ys - ay - t * dy))
    return np.clip(scale * width / 2 + 0.5 - distance, 0, 1)


def bounding_box(image):
    rows, cols = np.nonzero(image)
    return rows.max() - rows.min() + 1, cols.max() - cols.min() + 1


def centre_of_mass(image):
    index = np.arange(image.shape[0])
    mass = image.sum()
    return (index @ image.sum(axis=1)) / mass, (index @ image.sum(axis=0)) / mass


def test_where_it_is_drawn_does_not_matter():
    at_top_left = preprocess(render(SEVEN, 2, offset=(0, 0)))
    for offset in [(150, 30), (7, 190), (199, 199)]:
        assert np.array_equal(preprocess(render(SEVEN, 2, offset=offset)), at_top_left), offset


def test_how_big_it_is_drawn_does_not_matter():
    # The same drawing at twice the resolution: exactly the same input.
    ink = render(ZERO, 1.5, canvas=(150, 150))
    expected = preprocess(ink)
    assert np.allclose(preprocess(np.kron(ink, np.ones((2, 2)))), expected, atol=1e-6)
    # Drawn again, three times as large (with a line three times as wide): the same digit,
    # up to where the anti-aliased edges fall.
    large = preprocess(render(SEVEN, 3.6, offset=(10, 20)))
    small = preprocess(render(SEVEN, 1.2, offset=(60, 5)))
    assert np.abs(large - small).mean() < 0.01
    assert np.abs(large - small).max() < 0.2
    assert bounding_box(large) == bounding_box(small)


def test_scaled_into_20_by_20_keeping_the_aspect_ratio():
    tall = np.zeros((300, 200))
    tall[20:260, 50:110] = 1  # 240 × 60: 4 to 1
    image = preprocess(tall)
    assert bounding_box(image) == (20, 5)
    assert image.max() == 1.0  # a solid block stays solid
    wide = preprocess(tall.T)
    assert bounding_box(wide) == (5, 20)
    # A drawing smaller than the box is scaled up to fit it.
    dot = np.zeros((50, 50))
    dot[10:14, 20:22] = 1
    assert bounding_box(preprocess(dot)) == (20, 10)


def test_anti_aliased_a_thin_line_is_kept_not_skipped():
    # A 1-pixel line on a 200-pixel drawing: sampling every 10th pixel would miss it;
    # averaging over each output pixel keeps a faint line with the same share of ink.
    ink = np.zeros((200, 200))
    ink[:, 0] = ink[:, -1] = 1   # a frame, 200 × 200
    ink[0, :] = ink[-1, :] = 1
    ink[103, :] = 1              # the thin line, on no multiple of 10
    image = preprocess(ink)
    assert image[4:24, 4:24].sum() == pytest.approx(ink.sum() / 100, rel=1e-6)
    line_row = 4 + 103 // 10
    assert np.allclose(image[line_row, 5:23], 0.1)


def test_centre_of_mass_at_the_centre():
    for stroke in (SEVEN, ZERO):
        for scale in (1, 2.5):
            image = preprocess(render(stroke, scale))
            cy, cx = centre_of_mass(image)
            assert abs(cy - 14) <= 0.5 + 1e-5 and abs(cx - 14) <= 0.5 + 1e-5, (cy, cx)


def test_lopsided_ink_stays_inside_the_field():
    # All the mass at one end: centring it would push the other end off the field.
    ink = np.zeros((100, 100))
    ink[0:20, :] = 1     # a heavy bar
    ink[20:100, 0] = 0.01  # a faint long tail
    image = preprocess(ink)
    assert bounding_box(image) == (20, 20)
    assert image.sum() == pytest.approx(ink.sum() / 25, rel=1e-6)


def test_mnist_digits_are_already_made_this_way(mnist_data):
    # MNIST's test images went through these steps: nearly all come out unchanged,
    # bit for bit, and drawn ten times larger somewhere on a bigger canvas, too.
    _, (x_test, _) = mnist_data
    images = x_test[:2000].astype(np.float32) / 255
    unchanged = [np.array_equal(preprocess(image), image) for image in images]
    assert np.mean(unchanged) >= 0.999
    canvas = np.zeros((400, 400))
    for image in images[:20]:
        canvas[:] = 0
        canvas[57:337, 101:381] = np.kron(image, np.ones((10, 10)))
        assert np.allclose(preprocess(canvas), image, atol=1e-6)


@pytest.mark.parametrize("n_in, n_out", [(1, 1), (7, 20), (20, 20), (280, 20), (283, 19)])
def test_area_weights_average(n_in, n_out):
    weights = area_weights(n_in, n_out)
    assert weights.shape == (n_out, n_in)
    assert np.allclose(weights.sum(axis=1), 1)
    # Each input pixel counts as much as its size on the output: n_out / n_in.
    assert np.allclose(weights.sum(axis=0), n_out / n_in)


@pytest.mark.parametrize("ink, message", [
    (np.zeros((50, 50)), "empty"),
    (np.zeros((28, 28, 3)), "2-D"),
    (np.zeros((0, 5)), "2-D"),
    (np.full((5, 5), np.nan), "finite"),
    (np.full((5, 5), 1.5), r"\[0, 1\]"),
    (np.full((5, 5), -0.1), r"\[0, 1\]"),
])
def test_bad_drawings_are_refused(ink, message):
    with pytest.raises(ValueError, match=message):
        preprocess(ink)
