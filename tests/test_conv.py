"""Convolution and pooling: the textbook's math against plain loops, the compiled twins against
the textbook, and the layers as a Keras user meets them (shapes, names, summary, bad
arguments, gradcheck, files, every way of running a model)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinynn
from tinynn import convolution, reference
from tinynn.convolution import geometry
from tinynn.layers import (
    AveragePooling2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAveragePooling2D,
    GlobalMaxPooling2D,
    MaxPooling2D,
    Reshape,
)

# ---------------------------------------------------------------- the math, by plain loops


def loop_conv(x, W, b, strides, padding, dilation):
    """z by its definition: for each output pixel, each tap that lands in the image."""
    n, h, w, _ = x.shape
    kh, kw, _, f = W.shape
    (oh, top, _), (ow, left, _) = (geometry(h, kh, strides[0], dilation[0], padding),
                                   geometry(w, kw, strides[1], dilation[1], padding))
    z = np.zeros((n, oh, ow, f))
    for i in range(oh):
        for j in range(ow):
            for a in range(kh):
                for c in range(kw):
                    r = i * strides[0] + a * dilation[0] - top
                    q = j * strides[1] + c * dilation[1] - left
                    if 0 <= r < h and 0 <= q < w:
                        z[:, i, j, :] += x[:, r, q, :] @ W[a, c]
    return z + b


def loop_pool(x, pool, strides, padding, kind):
    """Each window's max or mean over its in-image part."""
    n, h, w, c = x.shape
    (oh, top, _), (ow, left, _) = (geometry(h, pool[0], strides[0], 1, padding),
                                   geometry(w, pool[1], strides[1], 1, padding))
    y = np.zeros((n, oh, ow, c))
    for i in range(oh):
        for j in range(ow):
            r, q = i * strides[0] - top, j * strides[1] - left
            window = x[:, max(r, 0) : r + pool[0], max(q, 0) : q + pool[1], :]
            y[:, i, j] = window.max((1, 2)) if kind == "max" else window.mean((1, 2))
    return y


def numeric_gradient(f, arrays, picks, g, h=1e-6):
    """d(Σ f() · g)/d(array[index]) by central differences, at a few entries of each array."""
    out = []
    for array, index in picks:
        old = array[index]
        array[index] = old + h
        up = (f() * g).sum()
        array[index] = old - h
        down = (f() * g).sum()
        array[index] = old
        out.append((up - down) / (2 * h))
    return out


geometries = st.fixed_dictionaries({
    "size": st.tuples(st.integers(1, 9), st.integers(1, 9)),
    "kernel": st.tuples(st.integers(1, 4), st.integers(1, 4)),
    "strides": st.tuples(st.integers(1, 3), st.integers(1, 3)),
    "dilated": st.booleans(),
    "padding": st.sampled_from(["valid", "same"]),
    "channels": st.tuples(st.integers(1, 3), st.integers(1, 4)),
    "seed": st.integers(0, 2**32 - 1),
})


def conv_case(g):
    """(x, W, b, strides, padding, dilation) of a case whose output is not empty."""
    strides, dilation = g["strides"], (1, 1)
    if g["dilated"]:
        strides, dilation = (1, 1), (2, 2)  # Keras: dilation > 1 only with strides 1
    rng = np.random.default_rng(g["seed"])
    (h, w), (kh, kw), (c, f) = g["size"], g["kernel"], g["channels"]
    out = [geometry(s, k, st_, d, g["padding"])[0]
           for s, k, st_, d in zip((h, w), (kh, kw), strides, dilation)]
    if min(out) < 1:
        return None
    return (rng.normal(size=(2, h, w, c)), rng.normal(size=(kh, kw, c, f)), rng.normal(size=f),
            strides, g["padding"], dilation)


@settings(max_examples=60, deadline=None)
@given(geometries)
def test_conv2d_is_its_definition_and_its_gradients_are_its_derivatives(g):
    case = conv_case(g)
    if case is None:
        return
    x, W, b, strides, padding, dilation = case
    z, a = reference.conv2d_forward(x, W, b, strides, padding, dilation, "linear")
    np.testing.assert_allclose(z, loop_conv(x, W, b, strides, padding, dilation), atol=1e-12)
    rng = np.random.default_rng(0)
    dz = rng.normal(size=z.shape)
    dx, dW, db = reference.conv2d_backward(x, W, a, dz, strides, padding, dilation, "linear")
    np.testing.assert_allclose(db, dz.sum((0, 1, 2)), atol=1e-12)
    picks = [(x, tuple(rng.integers(0, s) for s in x.shape)) for _ in range(3)] + [
        (W, tuple(rng.integers(0, s) for s in W.shape)) for _ in range(3)]
    numeric = numeric_gradient(lambda: loop_conv(x, W, b, strides, padding, dilation),
                               None, picks, dz)
    backprop = [dx[i] if arr is x else dW[i] for arr, i in picks]
    np.testing.assert_allclose(backprop, numeric, rtol=1e-6, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(geometries, st.sampled_from(["max", "average"]))
def test_pooling_is_its_definition_and_its_gradient_its_derivative(g, kind):
    (h, w), pool, strides, padding = g["size"], g["kernel"], g["strides"], g["padding"]
    if min(geometry(s, k, st_, 1, padding)[0] for s, k, st_ in zip((h, w), pool, strides)) < 1:
        return
    rng = np.random.default_rng(g["seed"])
    x = rng.normal(size=(2, h, w, g["channels"][0]))
    forward = getattr(reference, f"{kind}_pool2d_forward")
    y = forward(x, pool, strides, padding)
    np.testing.assert_allclose(y, loop_pool(x, pool, strides, padding, kind), atol=1e-12)
    dy = rng.normal(size=y.shape)
    dx = (reference.max_pool2d_backward(dy, x, pool, strides, padding) if kind == "max"
          else reference.average_pool2d_backward(dy, x.shape, pool, strides, padding))
    picks = [(x, tuple(rng.integers(0, s) for s in x.shape)) for _ in range(4)]
    numeric = numeric_gradient(lambda: loop_pool(x, pool, strides, padding, kind), None,
                               picks, dy)
    np.testing.assert_allclose([dx[i] for _, i in picks], numeric, rtol=1e-6, atol=1e-6)


def test_max_pooling_sends_a_tie_to_the_first_maximum_in_row_major_order():
    x = np.zeros((1, 2, 2, 1))
    dx = reference.max_pool2d_backward(np.ones((1, 1, 1, 1)), x, (2, 2), (2, 2), "valid")
    assert dx.ravel().tolist() == [1, 0, 0, 0]
    dx = reference.global_max_pool2d_backward(np.ones((1, 1)), x)
    assert dx.ravel().tolist() == [1, 0, 0, 0]


def test_same_padding_puts_the_extra_row_at_the_bottom_and_right():
    assert geometry(28, 3, 2, 1, "same") == (14, 0, 1)  # 13 · 2 + 3 − 28 = 1: after
    assert geometry(7, 4, 1, 1, "same") == (7, 1, 2)
    assert geometry(7, 3, 1, 2, "same") == (7, 2, 2)  # a dilated 3-tap window spans 5
    assert geometry(5, 3, 2, 1, "valid") == (2, 0, 0)


def test_average_pooling_with_same_padding_averages_the_in_image_part_only():
    x = np.ones((1, 3, 3, 1))
    assert (reference.average_pool2d_forward(x, (2, 2), (2, 2), "same") == 1).all()


# ---------------------------------------------------------------- the compiled twins


def twins_agree(got, want, dtype):
    tol = 1e-5 if dtype == np.float32 else 1e-10
    if want is None:
        assert got is None
        return
    assert got.shape == want.shape and got.dtype == want.dtype
    scale = max(1.0, float(np.abs(want).max(initial=0)))
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale)


def layout(a, kind):
    """The same values C-contiguous, or as a strided view."""
    if kind == "strided":
        wide = np.zeros((*a.shape[:-1], 2 * a.shape[-1]), a.dtype)
        wide[..., ::2] = a
        return wide[..., ::2]
    return a


@pytest.mark.compiled
@settings(max_examples=60, deadline=None)
@given(geometries, st.sampled_from([np.float32, np.float64]),
       st.sampled_from(["linear", "relu", "sigmoid", "tanh", "softmax"]),
       st.sampled_from(["C", "strided"]), st.booleans())
def test_conv2d_twins_agree(g, dtype, activation, kind, bias):
    from tinynn.compiled import kernels as compiled

    case = conv_case(g)
    if case is None:
        return
    x, W, b, strides, padding, dilation = case
    x, W, b = layout(x.astype(dtype), kind), W.astype(dtype), b.astype(dtype) if bias else None
    args = (strides, padding, dilation, activation)
    for got, want in zip(compiled.conv2d_forward(x, W, b, *args),
                         reference.conv2d_forward(x, W, b, *args)):
        twins_agree(got, want, dtype)
    _, a = reference.conv2d_forward(x, W, b, *args)
    da = np.random.default_rng(1).normal(size=a.shape).astype(dtype)
    for need_dx in (True, False):
        for got, want in zip(compiled.conv2d_backward(x, W, a, da, *args, need_dx),
                             reference.conv2d_backward(x, W, a, da, *args, need_dx)):
            twins_agree(got, want, dtype)


@pytest.mark.compiled
@settings(max_examples=60, deadline=None)
@given(geometries, st.sampled_from([np.float32, np.float64]), st.sampled_from(["C", "strided"]),
       st.sampled_from([0.0, 0.5]))
def test_pooling_twins_agree(g, dtype, kind, ties):
    from tinynn.compiled import kernels as compiled

    (h, w), pool, strides, padding = g["size"], g["kernel"], g["strides"], g["padding"]
    if min(geometry(s, k, st_, 1, padding)[0] for s, k, st_ in zip((h, w), pool, strides)) < 1:
        return
    rng = np.random.default_rng(g["seed"])
    x = rng.normal(size=(2, h, w, g["channels"][0]))
    x[rng.random(x.shape) < ties] = 1.0  # ties: the first maximum wins in both
    x = layout(x.astype(dtype), kind)
    y = reference.max_pool2d_forward(x, pool, strides, padding)
    dy = rng.normal(size=y.shape).astype(dtype)
    args = (pool, strides, padding)
    twins_agree(compiled.max_pool2d_forward(x, *args), y, dtype)
    twins_agree(compiled.max_pool2d_backward(dy, x, *args),
                reference.max_pool2d_backward(dy, x, *args), dtype)
    twins_agree(compiled.average_pool2d_forward(x, *args),
                reference.average_pool2d_forward(x, *args), dtype)
    twins_agree(compiled.average_pool2d_backward(dy, x.shape, *args),
                reference.average_pool2d_backward(dy, x.shape, *args), dtype)
    dg = rng.normal(size=(2, x.shape[3])).astype(dtype)
    twins_agree(compiled.global_max_pool2d_forward(x), reference.global_max_pool2d_forward(x),
                dtype)
    twins_agree(compiled.global_max_pool2d_backward(dg, x),
                reference.global_max_pool2d_backward(dg, x), dtype)
    twins_agree(compiled.global_average_pool2d_forward(x),
                reference.global_average_pool2d_forward(x), dtype)
    twins_agree(compiled.global_average_pool2d_backward(dg, x.shape),
                reference.global_average_pool2d_backward(dg, x.shape), dtype)


@pytest.mark.compiled
@pytest.mark.parametrize("dead", [0.0, 0.3, 0.95, 1.0])
def test_conv2d_backward_twin_skips_windows_without_gradient_exactly(dead):
    """A pooling after a convolution leaves windows with no gradient at all: the twin
    leaves them out of its products (``conv._live_rows``), and must still agree."""
    from tinynn.compiled import conv
    from tinynn.compiled import kernels as compiled

    rng = np.random.default_rng(int(dead * 100))
    x = rng.normal(size=(19, 9, 8, 6)).astype(np.float32)
    W = rng.normal(size=(3, 3, 6, 5)).astype(np.float32)  # 54 weights a filter: BLAS
    assert 3 * 3 * 6 > conv.DIRECT_MAX
    args = ((1, 1), "same", (1, 1), "tanh")
    _, a = reference.conv2d_forward(x, W, None, *args)
    da = rng.normal(size=a.shape).astype(np.float32)
    da[rng.random(a.shape[:3]) < dead] = 0  # whole windows (every filter) without one
    for got, want in zip(compiled.conv2d_backward(x, W, a, da, *args),
                         reference.conv2d_backward(x, W, a, da, *args)):
        twins_agree(got, want, np.float32)


@pytest.mark.compiled
@pytest.mark.parametrize("strides", [(1, 1), (2, 2), (3, 3), (2, 3), (4, 2)])
@pytest.mark.parametrize("size", [(6, 6), (7, 5), (5, 9)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pooling_2x2_twin_routes_exactly_as_the_reference(strides, size, dtype):
    """Keras's default pool has a loop of its own (windows apart or overlapping, some rows
    and columns reached by no window): each dy must reach the reference's input, ties to
    the first maximum, a NaN to the first NaN, and nothing anywhere else (dx is not zeroed
    first when the windows are apart)."""
    from tinynn.compiled import kernels as compiled

    rng = np.random.default_rng(sum(strides) * 100 + sum(size))
    x = np.maximum(rng.normal(size=(3, *size, 9)), 0)  # relu's output: ties at zero
    x[0, 1, 1, :3] = np.nan
    x[1, 2, 3, :] = x[1, 2, 2, :]
    x = x.astype(dtype)
    y = reference.max_pool2d_forward(x, (2, 2), strides, "valid")
    dy = rng.normal(size=y.shape).astype(dtype)
    np.testing.assert_array_equal(compiled.max_pool2d_forward(x, (2, 2), strides, "valid"), y)
    got = compiled.max_pool2d_backward(dy, x, (2, 2), strides, "valid")
    want = reference.max_pool2d_backward(dy, x, (2, 2), strides, "valid")
    if min(strides) >= 2:  # each input takes one window's dy at most: the very value
        np.testing.assert_array_equal(got, want)
    else:  # overlapping windows add theirs up, in another order
        twins_agree(got, want, dtype)
        np.testing.assert_array_equal(got == 0, want == 0)


@pytest.mark.compiled
def test_max_pooling_twin_keeps_a_nan():
    from tinynn.compiled import kernels as compiled

    x = np.zeros((1, 2, 2, 1), np.float32)
    x[0, 1, 0, 0] = np.nan
    assert np.isnan(compiled.max_pool2d_forward(x, (2, 2), (2, 2), "valid")).all()
    assert np.isnan(compiled.global_max_pool2d_forward(x)).all()


# ---------------------------------------------------------------- the layers


def mnist_convnet(dropout: float = 0.5) -> tinynn.Sequential:
    """Keras's "Simple MNIST convnet", as its example writes it."""
    return tinynn.Sequential([
        tinynn.Input(shape=(28, 28, 1)),
        Conv2D(32, kernel_size=(3, 3), activation="relu"),
        MaxPooling2D(pool_size=(2, 2)),
        Conv2D(64, kernel_size=(3, 3), activation="relu"),
        MaxPooling2D(pool_size=(2, 2)),
        Flatten(),
        Dropout(dropout),
        Dense(10, activation="softmax"),
    ])


def test_the_mnist_convnet_has_keras_shapes_counts_and_names():
    model = mnist_convnet()
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    for name, shape, count in [("conv2d", "(None, 26, 26, 32)", "320"),
                               ("max_pooling2d", "(None, 13, 13, 32)", "0"),
                               ("(None, 11, 11, 64)", "", "18,496"),
                               ("(None, 5, 5, 64)", "", "0"), ("(None, 1600)", "", "0"),
                               ("(None, 10)", "", "16,010")]:
        assert name in text and shape in text and count in text
    assert "Total params: 34,826" in text
    assert [w.shape for w in model.get_weights()] == [
        (3, 3, 1, 32), (32,), (3, 3, 32, 64), (64,), (1600, 10), (10,)]


def test_glorot_fans_are_the_receptive_field_times_the_channels():
    tinynn.utils.set_random_seed(0)
    kernel = Conv2D(64, 3, input_shape=(11, 11, 32)).get_weights()[0]
    limit = np.sqrt(6 / (9 * 32 + 9 * 64))
    assert np.abs(kernel).max() <= limit and np.abs(kernel).max() > 0.95 * limit


@pytest.mark.parametrize(("layer", "shape", "out"), [
    (Conv2D(4, 3, strides=2, padding="same"), (7, 7, 2), (4, 4, 4)),
    (Conv2D(4, (2, 5)), (28, 28, 1), (27, 24, 4)),
    (Conv2D(4, 3, dilation_rate=2), (9, 9, 1), (5, 5, 4)),
    (MaxPooling2D(3, strides=2, padding="same"), (7, 7, 2), (4, 4, 2)),
    (AveragePooling2D((2, 3), padding="same"), (5, 5, 2), (3, 2, 2)),
    (GlobalAveragePooling2D(), (5, 4, 3), (3,)),
    (GlobalMaxPooling2D(), (5, 4, 3), (3,)),
    (Reshape((28, 28, 1)), (784,), (28, 28, 1)),
    (Reshape((-1, 4)), (2, 6), (3, 4)),
    (Flatten(), (5, 5, 64), (1600,)),
])
def test_output_shapes_are_keras(layer, shape, out, backend):
    assert layer.compute_output_shape(shape) == out
    x = np.random.default_rng(0).normal(size=(2, *shape)).astype(np.float32)
    y = layer(x)
    assert y.shape == (2, *out)
    assert layer.backward(np.ones_like(y)).shape == x.shape


@pytest.mark.parametrize(("make", "message"), [
    (lambda: Conv2D(8, 3, data_format="channels_first"), "channels_last only"),
    (lambda: Conv2D(8, 3, strides=2, dilation_rate=2), "strides > 1 together with dilation"),
    (lambda: Conv2D(8, 3, padding="full"), "padding must be one of"),
    (lambda: Conv2D(8, (3, 3, 3)), "kernel_size must be an int or a pair"),
    (lambda: Conv2D(0, 3), "filters must be a positive integer"),
    (lambda: Conv2D(8, 3, groups=2), "only groups=1"),
    (lambda: MaxPooling2D(0), "pool_size must be a positive integer"),
    (lambda: AveragePooling2D(2, data_format="channels_first"), "channels_last only"),
    (lambda: GlobalMaxPooling2D(keepdims=True), "keepdims"),
    (lambda: Reshape((-1, -1)), "one -1"),
])
def test_bad_arguments_are_refused_by_name(make, message):
    with pytest.raises((TypeError, ValueError), match=message):
        make()


def test_images_without_a_channel_axis_are_refused_with_the_fix():
    model = tinynn.Sequential([Conv2D(4, 3, activation="relu"), Flatten(), Dense(10)])
    with pytest.raises(ValueError, match=r"np.expand_dims\(x, -1\)"):
        model.build((None, 28, 28))
    with pytest.raises(ValueError, match="does not fit"):
        tinynn.Sequential([tinynn.Input((2, 2, 1)), Conv2D(4, 3)])
    with pytest.raises(ValueError, match="cannot reshape"):
        tinynn.Sequential([tinynn.Input((10,)), Reshape((3, 3))])


def small_convnet() -> tinynn.Sequential:
    return tinynn.Sequential([
        tinynn.Input(shape=(7, 6, 2)),
        Conv2D(3, (3, 2), padding="same", activation="tanh"),
        MaxPooling2D(2, padding="same"),
        Conv2D(4, 2, strides=(1, 2), activation="relu"),
        AveragePooling2D((1, 2), padding="same"),
        Conv2D(3, 2, dilation_rate=(1, 2), padding="same", activation="sigmoid"),
        GlobalAveragePooling2D(),
        Dense(5, activation="softmax"),
    ])


def test_backprop_through_every_conv_layer_passes_gradcheck(backend):
    tinynn.utils.set_random_seed(3)
    model = small_convnet()
    model.compile("adam", "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(4, 7, 6, 2)), rng.integers(0, 5, 4)
    report = tinynn.gradcheck(model, x, y, entries=16)
    assert report.ok, report
    assert len(dict(report)) == 8  # three kernels, three biases, the dense pair


def test_global_max_pooling_passes_gradcheck(backend):
    tinynn.utils.set_random_seed(4)
    model = tinynn.Sequential([tinynn.Input((5, 5, 2)), Conv2D(3, 2, activation="tanh"),
                               GlobalMaxPooling2D(), Dense(3)])
    model.compile("sgd", tinynn.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(1)
    report = tinynn.gradcheck(model, rng.normal(size=(3, 5, 5, 2)), rng.integers(0, 3, 3))
    assert report.ok, report


def test_a_convnet_runs_every_way_and_round_trips_a_file(backend, tmp_path):
    tinynn.utils.set_random_seed(0)
    model = small_convnet()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(2)
    x, y = rng.random((64, 7, 6, 2)).astype(np.float32), rng.integers(0, 5, 64)
    before = model.evaluate(x, y, verbose=0)[0]
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert model.evaluate(x, y, verbose=0)[0] < before
    model.train_on_batch(x[:8], y[:8])
    out = model.predict(x, verbose=0)
    np.testing.assert_allclose(model(x), out, rtol=1e-6, atol=1e-7)
    path = tmp_path / "convnet.keras"
    model.save(path)
    loaded = tinynn.models.load_model(path)
    assert [type(a) for a in loaded.layers] == [type(b) for b in model.layers]
    assert [a.get_config() | {"name": 0} for a in loaded.layers] == [
        b.get_config() | {"name": 0} for b in model.layers]
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), out)


def test_a_convnet_trains_to_the_same_weights_on_both_backends():
    def train(backend):
        with tinynn.backend.using(backend):
            tinynn.utils.set_random_seed(7)
            model = mnist_convnet(dropout=0.5)
            model.compile("adam", "categorical_crossentropy")
            rng = np.random.default_rng(0)
            x = rng.random((96, 28, 28, 1)).astype(np.float32)
            y = tinynn.utils.to_categorical(rng.integers(0, 10, 96), 10)
            model.fit(x, y, batch_size=32, epochs=2, verbose=0)
            return model.get_weights()

    for ours, theirs in zip(train("numba"), train("numpy")):
        np.testing.assert_allclose(ours, theirs, atol=2e-5, rtol=0)


def test_the_textbook_module_is_the_reference_kernels():
    for name in ("conv2d_forward", "max_pool2d_backward", "global_average_pool2d_forward"):
        assert getattr(reference, name) is getattr(convolution, name)


_TRAIN_A_CONVNET = """
import hashlib, numpy as np, tinynn
tinynn.utils.set_random_seed(5)
from tinynn.layers import Conv2D, MaxPooling2D, Flatten, Dropout, Dense
model = tinynn.Sequential([tinynn.Input((28, 28, 1)), Conv2D(8, 3, activation="relu"),
                           MaxPooling2D(), Conv2D(40, 3, activation="relu"), MaxPooling2D(),
                           Flatten(), Dropout(0.5), Dense(10, activation="softmax")])
model.compile("adam", "categorical_crossentropy")
rng = np.random.default_rng(0)
x = rng.random((150, 28, 28, 1)).astype(np.float32)
x[x < 0.7] = 0  # mostly zeros, as MNIST
y = tinynn.utils.to_categorical(rng.integers(0, 10, 150), 10)
model.fit(x, y, batch_size=50, epochs=2, verbose=0)
print(hashlib.sha256(b"".join(w.tobytes() for w in model.get_weights())).hexdigest())
"""


@pytest.mark.compiled
def test_a_convnet_trains_to_the_same_bits_whatever_the_thread_count():
    """Loops split between 1 or 3 threads, BLAS on 1 or 2: the same weights, to the bit."""
    import os
    import subprocess
    import sys

    def weights_hash(threads: str, blas: str) -> str:
        env = {**os.environ, "TINYNN_THREADS": threads, "OPENBLAS_NUM_THREADS": blas,
               "TINYNN_BACKEND": "numba"}
        return subprocess.run([sys.executable, "-c", _TRAIN_A_CONVNET], env=env, check=True,
                              capture_output=True, text=True).stdout.strip()

    assert weights_hash("1", "1") == weights_hash("3", "2")


@pytest.mark.compiled
def test_the_callers_own_blas_threads_are_left_as_they_were():
    """OpenBLAS's "local" thread count is process-wide: tinynn sets it to 1 around its
    threads' products and restores it after, also when two threads run convolutions at
    once (each would otherwise restore what the other had set)."""
    import threading

    from tinynn.compiled import kernels, sharing

    setter = sharing._blas_threads_setter()
    if setter is None:
        pytest.skip("this NumPy's BLAS has no per-thread thread count (not OpenBLAS ≥ 0.3.27)")
    before = setter(3)
    W = np.ones((3, 3, 8, 4), np.float32)

    def convolve(n: int, times: int = 1) -> None:
        x = np.random.default_rng(n).random((n, 9, 9, 8)).astype(np.float32)
        for _ in range(times):
            kernels.conv2d_backward(x, W, *kernels.conv2d_forward(
                x, W, None, (1, 1), "valid", (1, 1), "relu")[1:] * 2, (1, 1), "valid",
                (1, 1), "relu")

    try:
        for n in (4, 64):  # the calling thread alone; tinynn's threads
            convolve(n)
            assert setter(3) == 3
        both = [threading.Thread(target=convolve, args=(64, 20)) for _ in range(2)]
        for thread in both:
            thread.start()
        for thread in both:
            thread.join()
        assert setter(3) == 3
    finally:
        setter(before)


@pytest.mark.parametrize(("x", "message"), [
    (np.zeros((4, 784)), r"samples of shape \(784,\), but the model expects \(12, 12, 1\)"),
    (np.zeros((4, 12, 12)), r"np.expand_dims\(x, -1\)"),
    (np.zeros((4, 12, 12, 3)), r"samples of shape \(12, 12, 3\)"),
    (np.full((4, 12, 12, 1), np.nan), "must be finite"),
])
def test_bad_images_are_refused_and_nothing_changes(x, message, backend):
    tinynn.utils.set_random_seed(0)
    model = tinynn.Sequential([tinynn.Input((12, 12, 1)), Conv2D(4, 3, activation="relu"),
                               MaxPooling2D(), Flatten(), Dense(3)])
    model.compile("adam", tinynn.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = model.get_weights()
    y = np.zeros(len(x), int)
    for call in (lambda: model.fit(x, y, verbose=0), lambda: model.predict(x, verbose=0),
                 lambda: model.evaluate(x, y, verbose=0), lambda: model.train_on_batch(x, y)):
        with pytest.raises(ValueError, match=message):
            call()
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert model.optimizer.iterations == 0


def test_a_model_file_cannot_make_tinynn_allocate_a_huge_kernel(tmp_path):
    """The file declares a Conv2D with a billion filters: refused before anything that size
    exists (each stored weight's shape is checked before the layer allocates it)."""
    import json

    model = tinynn.Sequential([tinynn.Input((8, 8, 1)), Conv2D(2, 3), Flatten(), Dense(2)])
    path = tmp_path / "m.keras"
    model.save(path)
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    config = json.loads(str(arrays.pop("config")))
    config["layers"][0]["config"]["filters"] = 10**9
    with open(path, "wb") as f:
        np.savez(f, config=np.array(json.dumps(config)), **arrays)
    with pytest.raises(ValueError, match=r"weight 0 must have shape \(3, 3, 1, 1000000000\)"):
        tinynn.models.load_model(path)
