"""Every compiled kernel agrees with its NumPy twin; fused steps agree with layer-by-layer training.

Tolerances: the twins sum in different orders, so each entry may round
differently, and an entry that is a small difference of large terms carries
the large terms' rounding. Entries agree to 1e-5 (float32) or 1e-10 (float64)
relative to the largest entry of the result (and to themselves).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinynn
from tinynn import reference
from tinynn.compiled import kernels as compiled
from tinynn.compiled import loops, table, updates

pytestmark = pytest.mark.compiled

DTYPES = [np.float32, np.float64]
TOL = {np.float32: 1e-5, np.float64: 1e-10}
LAYOUTS = ["C", "F", "strided"]


def assert_twins(got, want, dtype, err_msg=""):
    want = np.asarray(want)
    scale = max(1.0, float(np.abs(want).max(initial=0)))
    np.testing.assert_allclose(got, want, rtol=TOL[dtype], atol=TOL[dtype] * scale,
                               err_msg=err_msg)


def arrange(a: np.ndarray, layout: str) -> np.ndarray:
    """The same values as ``a``, laid out C-contiguous, Fortran-ordered, or as a strided view."""
    if layout == "F":
        return np.asfortranarray(a)
    if layout == "strided":
        wide = np.zeros((a.shape[0], 2 * a.shape[1]), a.dtype)
        wide[:, ::2] = a
        return wide[:, ::2]
    return np.ascontiguousarray(a)


def sparse_normal(rng, shape, dtype, zeros: float) -> np.ndarray:
    """Normal values with a fraction ``zeros`` of exact zeros (as in images)."""
    a = rng.normal(size=shape)
    a[rng.random(shape) < zeros] = 0
    return a.astype(dtype)


shapes = st.tuples(st.integers(1, 64), st.integers(1, 300), st.integers(1, 300))
common = {
    "dtype": st.sampled_from(DTYPES),
    "layout": st.sampled_from(LAYOUTS),
    "seed": st.integers(0, 2**32 - 1),
    "zeros": st.sampled_from([0.0, 0.5, 0.8]),
}


@settings(max_examples=60, deadline=None)
@given(shape=shapes, activation=st.sampled_from(tinynn.activations.NAMES), **common)
def test_dense_forward_and_backward(shape, activation, dtype, layout, seed, zeros):
    n, k, u = shape
    rng = np.random.default_rng(seed)
    x = arrange(sparse_normal(rng, (n, k), dtype, zeros), layout)
    W = arrange(rng.normal(0, 0.1, (k, u)).astype(dtype), layout)
    b = rng.normal(size=u).astype(dtype)
    z, a = compiled.dense_forward(x, W, b, activation)
    z_ref, a_ref = reference.dense_forward(x, W, b, activation)
    assert_twins(z, z_ref, dtype)
    assert_twins(a, a_ref, dtype)
    assert a.dtype == dtype

    da = arrange(rng.normal(size=(n, u)).astype(dtype), layout)
    for need_dx in (True, False):
        got = compiled.dense_backward(x, W, a_ref, da, activation, need_dx)
        want = reference.dense_backward(x, W, a_ref, da, activation, need_dx)
        for g, w in zip(got, want):
            if w is None:
                assert g is None
            else:
                assert_twins(g, w, dtype)


def test_dense_forward_without_bias():
    x, W = np.ones((2, 3)), np.arange(6.0).reshape(3, 2)
    np.testing.assert_array_equal(compiled.dense_forward(x, W, None, "linear")[0], x @ W)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 64), u=st.integers(1, 300), dtype=st.sampled_from(DTYPES),
       layout=st.sampled_from(LAYOUTS), seed=st.integers(0, 2**32 - 1),
       scale=st.sampled_from([0.1, 10.0, 100.0]))
def test_activations(n, u, dtype, layout, seed, scale):
    rng = np.random.default_rng(seed)
    z = arrange((rng.normal(size=(n, u)) * scale).astype(dtype), layout)
    da = arrange(rng.normal(size=(n, u)).astype(dtype), layout)
    for name, (forward, backward) in compiled.ACTIVATIONS.items():
        ref_forward, ref_backward = reference.ACTIVATIONS[name]
        a = forward(z)
        assert_twins(a, ref_forward(z), dtype, err_msg=name)
        assert_twins(backward(da, a), ref_backward(da, a), dtype, err_msg=name)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 64), u=st.integers(1, 300), dtype=st.sampled_from(DTYPES),
       layout=st.sampled_from(LAYOUTS), seed=st.integers(0, 2**32 - 1),
       slope=st.sampled_from([0.0, 0.01, 0.3, 1.0]))
def test_leaky_relu_twins(n, u, dtype, layout, seed, slope):
    """An activation with a parameter: the slope below 0 (and exact zeros, the kink)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, u))
    z[rng.random((n, u)) < 0.2] = 0
    z = arrange(z.astype(dtype), layout)
    da = arrange(rng.normal(size=(n, u)).astype(dtype), layout)
    a = compiled.leaky_relu(z, slope)
    np.testing.assert_array_equal(a, reference.leaky_relu(z, slope))
    np.testing.assert_array_equal(compiled.leaky_relu_backward(da, a, slope),
                                  reference.leaky_relu_backward(da, a, slope))
    assert a.dtype == dtype


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 64), c=st.integers(1, 300), dtype=st.sampled_from(DTYPES),
       layout=st.sampled_from(LAYOUTS), seed=st.integers(0, 2**32 - 1),
       scale=st.sampled_from([1.0, 50.0]))
def test_losses_and_accuracy(n, c, dtype, layout, seed, scale):
    rng = np.random.default_rng(seed)
    logits = arrange((rng.normal(size=(n, c)) * scale).astype(dtype), layout)
    probs = arrange(rng.random((n, c)).astype(dtype), layout)
    probs[0, 0] = 0  # exercise the clip at ε
    labels = rng.integers(0, c, size=n)
    rows = rng.random((n, c)).astype(dtype)
    targets = (rows / rows.sum(axis=1, keepdims=True)).astype(dtype)
    for name, inputs, y in [("sparse_softmax_cross_entropy", logits, labels),
                            ("sparse_probability_cross_entropy", probs, labels),
                            ("categorical_softmax_cross_entropy", logits, targets),
                            ("categorical_probability_cross_entropy", probs + dtype(0.01),
                             targets)]:
        for suffix in ("", "_backward"):
            got = getattr(compiled, name + suffix)(inputs, y)
            want = getattr(reference, name + suffix)(inputs, y)
            assert_twins(got, want, dtype, err_msg=name + suffix)
            assert got.dtype == dtype
    np.testing.assert_array_equal(compiled.sparse_categorical_accuracy(logits, labels),
                                  reference.sparse_categorical_accuracy(logits, labels))


OPTIMIZER_CASES = [
    tinynn.optimizers.SGD(0.1), tinynn.optimizers.SGD(0.1, momentum=0.9),
    tinynn.optimizers.SGD(0.1, momentum=0.9, nesterov=True), tinynn.optimizers.Adam(0.01),
    tinynn.optimizers.AdamW(0.01, weight_decay=0.1), tinynn.optimizers.RMSprop(0.01),
    tinynn.optimizers.RMSprop(0.01, momentum=0.5, centered=True),
    tinynn.optimizers.Adagrad(0.01), tinynn.optimizers.Adagrad(0.1, initial_accumulator_value=0),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("optimizer", OPTIMIZER_CASES, ids=lambda o: str(o.get_config()))
def test_optimizer_updates(optimizer, dtype):
    """Every built-in optimizer's kernel and its twin take the same three steps."""
    assert optimizer.kernel in table.UPDATES
    rng = np.random.default_rng(0)
    shape = (37, 11)
    # Running means of g² (v, velocity) well above the square of the mean gradient, as they are.
    start = {"w": rng.normal(size=shape)} | {
        s: rng.random(shape) + (1 if s in ("v", "velocity", "accumulator") else -0.5)
        for s in optimizer.slot_names}
    gradients = [np.asfortranarray(rng.normal(size=shape).astype(dtype)) for _ in range(3)]
    twins = []
    for module in (compiled, reference):
        arrays = {k: v.astype(dtype) for k, v in start.items()}
        for step, g in enumerate(gradients, start=1):
            said = getattr(module, optimizer.kernel)(
                arrays["w"], g, *(arrays[s] for s in optimizer.slot_names),
                *optimizer.update_arguments(step))
            # The compiled twin says whether what it wrote is finite; the textbook's leaves
            # that to Optimizer.checked_step.
            if module is compiled:  # (a NumPy bool under NUMBA_DISABLE_JIT=1)
                assert isinstance(said, (bool, np.bool_)) and said
            else:
                assert said is None
        twins.append(arrays)
    for key in start:
        assert_twins(twins[0][key], twins[1][key], dtype, err_msg=key)


def test_fault_checks_see_nan_in_the_optimizer_state():
    """A NaN second moment is not flushed to 0 (``v >= tiny`` is False for NaN): it is caught."""
    w, g = np.ones(3, np.float32), np.zeros(3, np.float32)
    m, v = np.zeros(3, np.float32), np.array([np.nan, 1e-31, 1.0], np.float32)
    assert not updates._adam(w, g, m, v, 0.001, 0.9, 0.999, 1e-7)
    assert np.isnan(v[0]) and v[1] == 0
    g = np.array([3e38, 0, 0], np.float32)  # g² overflows: v turns infinite
    said = compiled.adam_update(np.ones(3, np.float32), g, np.zeros(3, np.float32),
                                np.zeros(3, np.float32), 0.001, 0.9, 0.999, 1e-7)
    assert isinstance(said, (bool, np.bool_)) and not said


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 40), u=st.integers(1, 200), rate=st.sampled_from([0.0, 0.2, 0.5, 0.9]),
       seed=st.integers(0, 2**63 - 1), step=st.integers(0, 2**40),
       dtype=st.sampled_from(DTYPES))
def test_dropout_twins_draw_the_same_masks(n, u, rate, seed, step, dtype):
    x = np.random.default_rng(0).normal(size=(n, u)).astype(dtype)
    np.testing.assert_array_equal(compiled.uniform(seed, step, n * u),
                                  reference.uniform(seed, step, n * u))
    y, s = compiled.dropout_forward(x, rate, seed, step)
    y_ref, s_ref = reference.dropout_forward(x, rate, seed, step)
    np.testing.assert_array_equal(s, s_ref)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(compiled.dropout_backward(x, s), reference.dropout_backward(x, s))


def test_dropout_masks_are_uniform_and_independent_of_neighbours():
    u = reference.uniform(12345, 7, 200_000)
    assert 0 <= u.min() and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.002
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 0.01
    assert not np.array_equal(u[:100], reference.uniform(12345, 8, 100))


def test_adam_flushes_moments_that_would_turn_subnormal():
    w, g = np.ones(2, np.float32), np.zeros(2, np.float32)
    m, v = np.array([1e-31, 1e-3], np.float32), np.array([1e-31, 1e-3], np.float32)
    compiled.adam_update(w, g, m, v, 0.001, 0.9, 0.999, 1e-7)
    assert m[0] == 0 and v[0] == 0
    assert m[1] == pytest.approx(0.9e-3) and v[1] == pytest.approx(0.999e-3)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 50), k=st.integers(1, 300), seed=st.integers(0, 2**32 - 1),
       zeros=st.sampled_from([0.0, 0.5, 0.95, 1.0]))
def test_sparse_rows_hold_exactly_the_non_zeros(n, k, seed, zeros):
    x = sparse_normal(np.random.default_rng(seed), (n, k), np.float32, zeros)
    indptr, indices, values = loops._sparse_rows(x)
    dense = np.zeros_like(x)
    for r in range(n):
        cols = indices[indptr[r] : indptr[r + 1]]
        assert np.all(np.diff(cols) > 0)
        dense[r, cols] = values[indptr[r] : indptr[r + 1]]
    np.testing.assert_array_equal(dense, x)
    assert indptr[-1] == np.count_nonzero(x)


MODEL = st.fixed_dictionaries({
    "widths": st.lists(st.integers(1, 40), min_size=1, max_size=3),
    "activations": st.lists(st.sampled_from(tinynn.activations.NAMES), min_size=3, max_size=3),
    "features": st.integers(1, 60),
    "n": st.integers(1, 100),
    "batch_size": st.integers(1, 64),
    "optimizer": st.sampled_from(["adam", "sgd", "nesterov", "rmsprop", "adamw", "adagrad"]),
    "leaky": st.sampled_from([None, 0.0, 0.2]),  # a LeakyReLU after each hidden layer
    "loss": st.sampled_from(["output_logits", "from_logits", "probabilities"]),
    "categorical": st.booleans(),
    "output": st.sampled_from(["sigmoid", "softmax"]),
    "output_layer": st.booleans(),  # the output activation as a layer of its own
    "dropout": st.sampled_from([0.0, 0.3]),
    "seed": st.integers(0, 2**32 - 1),
})
LOSS_OPTIONS = {
    "output_logits": {},
    "from_logits": {"from_logits": True, "use_output_logits": False},
    # Only on outputs in (0, 1): where a linear or relu output is clipped, the
    # loss can be ~1e-7, a difference of logs whose float32 rounding is as large
    # as its gradient, and Adam scales that noise up to full steps. (The kernel
    # twins and the Keras parity test cover the formula on such outputs.)
    "probabilities": {"use_output_logits": False},
}


def train(spec: dict, backend: str):
    rng = np.random.default_rng(spec["seed"])
    x = sparse_normal(rng, (spec["n"], spec["features"]), np.float32, 0.6)
    classes = spec["widths"][-1]
    y = rng.integers(0, classes, size=spec["n"])
    activations = spec["activations"][: len(spec["widths"])]
    if spec["loss"] != "from_logits":
        activations[-1] = spec["output"]
    L = tinynn.layers
    layers = []
    for u, a in zip(spec["widths"], activations):
        if layers and spec["leaky"] is not None:
            layers.append(L.LeakyReLU(spec["leaky"]))
        layers += [L.Dropout(spec["dropout"], seed=spec["seed"]), L.Dense(u, activation=a)]
    if spec["output_layer"] and activations[-1] in ("sigmoid", "softmax"):
        layers[-1].activation = "linear"
        layers.append(L.Softmax() if activations[-1] == "softmax" else L.Activation("sigmoid"))
    model = tinynn.Sequential([tinynn.Input(shape=(spec["features"],)), *layers])
    model.set_weights([rng.normal(0, 0.3, w.shape) for w in model.weights])
    optimizer = {"adam": lambda: tinynn.optimizers.Adam(),
                 "sgd": lambda: tinynn.optimizers.SGD(0.05, momentum=0.5),
                 "nesterov": lambda: tinynn.optimizers.SGD(0.05, momentum=0.5, nesterov=True),
                 "rmsprop": lambda: tinynn.optimizers.RMSprop(),
                 "adamw": lambda: tinynn.optimizers.AdamW(),
                 "adagrad": lambda: tinynn.optimizers.Adagrad(0.05)}[spec["optimizer"]]()
    kind = "Categorical" if spec["categorical"] else "SparseCategorical"
    loss = getattr(tinynn.losses, kind + "Crossentropy")(**LOSS_OPTIONS[spec["loss"]])
    if spec["categorical"]:
        y = tinynn.utils.to_categorical(y, classes)
    model.compile(optimizer, loss, metrics=["accuracy"])
    with tinynn.backend.using(backend):
        history = model.fit(x, y, batch_size=spec["batch_size"], epochs=2, shuffle=False,
                            verbose=0)
        predictions = model.predict(x)
        evaluation = model.evaluate(x, y, verbose=0)
    return model, history.history, predictions, evaluation


@pytest.mark.slow  # (60 pairs of whole fits, ~3 minutes: in `make test`, not `make check`)
@settings(max_examples=60, deadline=None)
@given(spec=MODEL)
def test_fused_training_matches_the_reference_path(spec):
    """Any Dense stack, with Dropout, LeakyReLU and output activation layers, any batch size
    (the last batch partial or not), every optimizer, both losses in every mode: two epochs of fused
    compiled steps end where NumPy's layer-by-layer steps end."""
    fast, fast_log, fast_pred, fast_eval = train(spec, "numba")
    slow, slow_log, slow_pred, slow_eval = train(spec, "numpy")
    # Adam divides by √v: where a gradient entry is near 0, rounding in the
    # order of its sum is scaled up, and that weight may move by a little more.
    for a, b in zip(fast.get_weights(), slow.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert fast.optimizer.iterations == slow.optimizer.iterations
    np.testing.assert_allclose(fast_log["loss"], slow_log["loss"], rtol=1e-4, atol=1e-6)
    # A prediction sums every layer's weight differences (a stack of 39-wide linear
    # layers trained by Nesterov steps of batch 1 reached 5e-5 on outputs of ~0.05).
    np.testing.assert_allclose(fast_pred, slow_pred, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(fast_eval, slow_eval, rtol=1e-4, atol=1e-5)


def test_predict_splits_rows_between_threads_without_changing_them(monkeypatch):
    from tinynn.compiled import engine

    rng = np.random.default_rng(0)
    x = sparse_normal(rng, (3000, 20), np.float32, 0.5)
    model = tinynn.Sequential([tinynn.layers.Dense(7, "relu", input_dim=20),
                               tinynn.layers.Dense(3, "softmax")])
    with tinynn.backend.using("numba"):
        monkeypatch.setattr(engine, "MIN_ROWS_PER_THREAD", 10**9)
        one = model.predict(x)
        monkeypatch.setattr(engine, "MIN_ROWS_PER_THREAD", 100)
        many = model.predict(x)
    np.testing.assert_array_equal(one, many)


@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1",
                    reason="with the JIT off there is no compiled code to cache")
def test_kernel_cache_is_stamped_by_every_kernel_file(tmp_path, monkeypatch):
    """A change to kernels.py alone invalidates the cached fused steps too, and a change in
    the textbook room (reference.py) invalidates nothing."""
    import shutil

    from numba.core import caching

    from tinynn.compiled import cache, fused

    assert caching.CacheImpl._locator_classes[:2] == [cache._UserProvided, cache._InTree]
    locator = fused.train_steps._cache._impl.locator
    assert isinstance(locator, cache._AllSources)
    assert locator.get_source_stamp() == cache.sources_stamp()
    copy = tmp_path / "compiled"
    shutil.copytree(cache.KERNELS, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(cache, "KERNELS", copy)
    cache.sources_stamp.cache_clear()
    try:
        before = cache.sources_stamp()
        (copy / "kernels.py").write_text((copy / "kernels.py").read_text() + "# edit\n")
        cache.sources_stamp.cache_clear()
        assert cache.sources_stamp() != before
        assert not any(p.name == "reference.py" for p in copy.iterdir())
    finally:
        cache.sources_stamp.cache_clear()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_wide_dense_twins_through_blas(dtype, layout):
    """Kernels of ≥ BLAS_MIN_WEIGHTS weights multiply through BLAS: same results."""
    n, k, u = 9, 500, 450
    assert loops.uses_blas(np.empty((k, u))) and k * u < 2 * loops.BLAS_MIN_WEIGHTS
    rng = np.random.default_rng(0)
    x = arrange(sparse_normal(rng, (n, k), dtype, 0.5), layout)
    W = arrange(rng.normal(0, 0.05, (k, u)).astype(dtype), layout)
    b = rng.normal(size=u).astype(dtype)
    for got, want in zip(compiled.dense_forward(x, W, b, "relu"),
                         reference.dense_forward(x, W, b, "relu")):
        assert_twins(got, want, dtype)
    a = reference.dense_forward(x, W, b, "relu")[1]
    da = rng.normal(size=(n, u)).astype(dtype)
    for got, want in zip(compiled.dense_backward(x, W, a, da, "relu"),
                         reference.dense_backward(x, W, a, da, "relu")):
        assert_twins(got, want, dtype)


@pytest.mark.parametrize("first", ["dense", "dropout"])
def test_wide_models_train_through_blas_as_numpy_does(first):
    """A wide first and second layer (BLAS in the fused step, sparse input gathered)."""
    rng = np.random.default_rng(1)
    x = sparse_normal(rng, (70, 500), np.float32, 0.8)
    y = rng.integers(0, 3, size=70)
    results = []
    for backend in ("numba", "numpy"):
        with tinynn.backend.using(backend):
            tinynn.utils.set_random_seed(0)
            L = tinynn.layers
            model = tinynn.Sequential([tinynn.Input(shape=(500,)),
                                       *([L.Dropout(0.2)] if first == "dropout" else []),
                                       L.Dense(450, "relu"), L.Dense(450, "tanh"),
                                       L.Dense(3, "softmax")])
            model.compile(tinynn.optimizers.RMSprop(), "sparse_categorical_crossentropy")
            model.fit(x, y, batch_size=32, epochs=2, verbose=0)
            results.append((model.get_weights(), model.predict(x), model.evaluate(x, y, verbose=0)))
    (w1, p1, e1), (w2, p2, e2) = results
    for a, b in zip(w1, w2):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(p1, p2, rtol=1e-4, atol=1e-5)
    assert e1 == pytest.approx(e2, rel=1e-4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bad", [None, np.nan, np.inf, -np.inf])
def test_all_finite_twins(dtype, bad):
    a = np.random.default_rng(0).normal(size=(37, 11)).astype(dtype) * 1e30
    if bad is not None:
        a[20, 3] = bad
    for layout in LAYOUTS:
        arranged = arrange(a, layout)
        assert compiled.all_finite(arranged) == reference.all_finite(arranged) == (bad is None)


@pytest.mark.parametrize("bad", [None, 0, 2])
def test_all_finite_twins_over_many_arrays(bad):
    """Many arrays in one call (one dtype: one compiled call; mixed: one each)."""
    rng = np.random.default_rng(1)
    arrays = [rng.normal(size=(5, 3)).astype(np.float32), rng.normal(size=7).astype(np.float32),
              rng.normal(size=(2, 2)).astype(np.float64)]
    if bad is not None:
        arrays[bad].flat[1] = np.nan
    for group in (arrays[:2], arrays):
        want = bad is None or bad >= len(group)
        assert compiled.all_finite(*group) == reference.all_finite(*group) == want
    assert compiled.all_finite() and reference.all_finite()
