"""Gradient checking: does backprop agree with finite differences?

For a parameter entry w, the central difference

    D(h) = (L(w + h) − L(w − h)) / 2h  ≈  ∂L/∂w + c·h²

is refined by Richardson extrapolation, (4·D(h/2) − D(h)) / 3, which cancels
the h² term where the loss is smooth (where it curves sharply, plain central
differences would be the inaccurate side). It cannot help at a kink (ReLU at 0,
the edge of a clipped probability): no finite difference that straddles one
agrees with either one-sided slope, and a check there can raise a false alarm.
The result is compared with the gradient backprop left in the layer's ``grads``. Both are computed
in float64 on a copy of the model, so the model itself is untouched.

**Reading the errors.** The relative error of a correct gradient is float64
rounding: typically 1e-11 to 1e-7, and up to ~2e-4 in rare ill-conditioned
cases (the probability formula's log-sum in a deep net; over 3,000 random
networks in ``tests/test_gradcheck.py`` the largest seen was 1.7e-4). A real
mistake in a derivative shows as 1e-2 to 1. ``DEFAULT_THRESHOLD`` = 1e-3 sits
between the two, a decade from each.

**Which entries.** Each parameter is checked on a random sample of at most
``entries`` of its entries (all of them when it has fewer), drawn from a
generator seeded by ``seed`` alone, so a check is repeatable and leaves
tinynn's own random state alone.
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Iterator, Mapping

import numpy as np

from tinynn import validation

#: Relative errors above this mean backprop and finite differences disagree.
DEFAULT_THRESHOLD = 1e-3

#: A check expected to take longer than this many seconds shows its progress.
PROGRESS_AFTER_SECONDS = 2.0


class GradientCheckError(AssertionError):
    """Raised by ``GradcheckReport.raise_if_failed`` when a parameter fails the check."""


class GradcheckReport(Mapping):
    """What ``gradcheck`` found: parameter name → largest relative error.

    Reads as a mapping (``report["dense/kernel"]``, ``max(report.values())``);
    ``ok`` says whether every error is within ``threshold``.

    Args:
        errors: parameter name → largest relative error over the checked entries.
        checked: parameter name → (entries checked, entries in the parameter).
        threshold: the largest error that passes.

    >>> report = GradcheckReport({"dense/kernel": 3e-9, "dense/bias": 0.25},
    ...                          {"dense/kernel": (64, 7840), "dense/bias": (10, 10)})
    >>> report.ok, round(report["dense/bias"], 2)
    (False, 0.25)
    >>> report
    parameter     checked   max rel. error  verdict
    dense/kernel  64/7840          3.0e-09  ok
    dense/bias    10/10            2.5e-01  WRONG
    1 of 2 parameters above the threshold 1e-03: backprop disagrees with finite differences
    """

    def __init__(
        self,
        errors: Mapping[str, float],
        checked: Mapping[str, tuple[int, int]],
        threshold: float = DEFAULT_THRESHOLD,
    ):
        self._errors = dict(errors)
        self.checked = dict(checked)
        self.threshold = float(threshold)

    def __getitem__(self, name: str) -> float:
        return self._errors[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._errors)

    def __len__(self) -> int:
        return len(self._errors)

    @property
    def failed(self) -> dict[str, float]:
        """The parameters whose error is above the threshold (NaN counts as above)."""
        return {k: e for k, e in self._errors.items() if not e <= self.threshold}

    @property
    def ok(self) -> bool:
        """True when every parameter's largest relative error is within ``threshold``."""
        return not self.failed

    def raise_if_failed(self) -> None:
        """Raise ``GradientCheckError`` naming the failing parameters, if any."""
        if not self.ok:
            raise GradientCheckError(
                f"gradients disagree beyond {self.threshold:.0e}: {self.failed}\n{self!r}")

    def __repr__(self) -> str:
        rows = [("parameter", "checked", "max rel. error", "verdict")]
        for name, error in self._errors.items():
            done, size = self.checked.get(name, (0, 0))
            verdict = "ok" if error <= self.threshold else "WRONG"
            rows.append((name, f"{done}/{size}", f"{error:.1e}", verdict))
        w0, w1, w2 = (max(len(r[i]) for r in rows) for i in range(3))
        lines = [f"{a:<{w0}}  {b:<{w1}}  {c:>{w2}}  {d}".rstrip() for a, b, c, d in rows]
        bad = len(self.failed)
        if bad:
            lines.append(f"{bad} of {len(self)} parameters above the threshold "
                         f"{self.threshold:.0e}: backprop disagrees with finite differences")
        else:
            lines.append(f"all {len(self)} parameters within the threshold {self.threshold:.0e}")
        return "\n".join(lines)


def gradcheck(
    model,
    x: np.ndarray,
    y: np.ndarray,
    loss=None,
    entries: int | None = 64,
    threshold: float = DEFAULT_THRESHOLD,
    seed: int = 0,
    h: float = 1e-5,
    floor: float = 1e-5,
    progress: bool | None = None,
) -> GradcheckReport:
    """Compare backprop's gradients with finite differences, parameter by parameter.

    error = max over checked entries |g_bp − g_num| / max(|g_bp|, |g_num|, floor)

    A correct gradient gives errors of 1e-11 to 1e-7 (float64 rounding; rarely
    up to ~2e-4); a wrong derivative gives 1e-2 to 1. The default threshold,
    1e-3, separates the two (see the module docstring).

    Args:
        model: a built model whose layers (found through ``model.layers``, and
            the ``layers`` of any layer that has them) keep ``params`` and fill
            ``grads`` in ``backward``. An unbuilt model is refused, not built.
        x: a small batch of inputs, shape (n, …), finite.
        y: its targets, as ``fit`` takes them for the loss: integer labels (n,), each
            below the model's number of outputs, or one-hot rows (n, c).
        loss: the loss to check; default the model's compiled loss.
        entries: how many entries of each parameter to check, drawn at random
            (all of them when the parameter has fewer); None checks every entry.
        threshold: the largest relative error that passes (``report.ok``).
        seed: seeds the draw of entries (tinynn's own generator is not used).
        h: finite-difference step.
        floor: gradients smaller than this are compared absolutely, since their
            relative error is all rounding noise.
        progress: print progress to stderr; None (default) does so only for
            checks expected to take more than a couple of seconds.

    Returns:
        A ``GradcheckReport``: ``{"dense/kernel": error, "dense/bias": error, …}``
        with ``ok``, ``threshold`` and a table for a repr.

    Raises:
        ValueError: unbuilt or uncompiled model, or bad ``x``/``y`` (non-finite
            inputs, labels out of range, mismatched lengths).

    >>> import numpy as np, tinynn
    >>> tinynn.utils.set_random_seed(0)
    >>> model = tinynn.Sequential([tinynn.layers.Dense(3, "tanh", input_dim=4, name="hidden"),
    ...                            tinynn.layers.Dense(2, "softmax", name="out")])
    >>> model.compile("adam", "sparse_categorical_crossentropy")
    >>> x = np.random.default_rng(0).normal(size=(5, 4))
    >>> report = gradcheck(model, x, np.array([0, 1, 1, 0, 1]))
    >>> report.ok, max(report.values()) < 1e-6
    (True, True)
    >>> report  # doctest: +ELLIPSIS
    parameter      checked  max rel. error  verdict
    hidden/kernel  12/12           ...e-...  ok
    hidden/bias    3/3             ...e-...  ok
    out/kernel     6/6             ...e-...  ok
    out/bias       2/2             ...e-...  ok
    all 4 parameters within the threshold 1e-03
    """
    from tinynn import losses

    if entries is not None:
        entries = validation.positive_int(entries, "entries")
    threshold = validation.positive_float(threshold, "threshold")
    loss = losses.get(loss) if loss is not None else getattr(model, "loss", None)
    if loss is None:
        raise ValueError("gradcheck needs a loss: compile the model or pass loss=")
    if not getattr(model, "built", False):
        # Building would draw initial weights from tinynn's generator: not ours to do.
        raise ValueError("gradcheck needs a built model: give the first layer an input_shape, "
                         "or call model.build((None, *sample_shape)) first")
    sample_shape = model.input_shape[1:] if model.input_shape is not None else None
    checked_x = validation.inputs(x, "x", sample_shape)  # checks only: this copy is float32
    y = loss.check_targets(y, "y", len(checked_x), model.output_shape[-1])  # as fit takes them
    x = np.asarray(x, dtype=np.float64)

    clone = copy.deepcopy(model)
    clone.loss = copy.deepcopy(loss)
    params = []  # (name, layer, key), in the order of the model's weights
    for layer in _layers(clone):
        for key, p in layer.params.items():
            layer.params[key] = p.astype(np.float64)
            params.append((f"{layer.name}/{key}", layer, key))

    clone.compute_gradients(x, y)
    analytic = {name: np.array(layer.grads[key], dtype=np.float64)
                for name, layer, key in params}
    rng = np.random.default_rng(seed)
    picks = {name: _pick(layer.params[key].size, entries, rng) for name, layer, key in params}
    total = sum(len(p) for p in picks.values())
    meter = _Progress(total, progress)

    errors, checked = {}, {}
    for name, layer, key in params:
        w = layer.params[key]
        g = analytic[name].reshape(-1)
        worst = 0.0
        for flat in picks[name]:
            i = np.unravel_index(flat, w.shape)
            d_h, d_half = (_central_difference(clone, x, y, w, i, step) for step in (h, h / 2))
            numeric = (4 * d_half - d_h) / 3
            scale = max(abs(g[flat]), abs(numeric), floor)
            # NaN must not hide behind max(): it is the worst error of all.
            error = abs(g[flat] - numeric) / scale
            worst = error if not error <= worst else worst
            meter.step(name)
        errors[name] = float(worst)
        checked[name] = (len(picks[name]), w.size)
    meter.close()
    return GradcheckReport(errors, checked, threshold)


def _layers(model) -> list:
    """Every layer with parameters, depth first: nested models' layers in place of the model."""
    found = []
    for layer in model.layers:
        if hasattr(layer, "layers"):
            found += _layers(layer)
        else:
            found.append(layer)
    return found


def _pick(size: int, entries: int | None, rng: np.random.Generator) -> np.ndarray:
    """Flat indices to check: all when ``size <= entries``, else a sorted random sample."""
    if entries is None or size <= entries:
        return np.arange(size)
    return np.sort(rng.choice(size, entries, replace=False))


def _central_difference(model, x, y, w: np.ndarray, i: tuple, h: float) -> float:
    """(L(w + h) − L(w − h)) / 2h for the single entry ``w[i]``, which is restored."""
    saved = w[i]
    w[i] = saved + h
    up = model.compute_loss(x, y)
    w[i] = saved - h
    down = model.compute_loss(x, y)
    w[i] = saved
    return (up - down) / (2 * h)


class _Progress:
    """A one-line counter on stderr, for checks long enough to make a student wonder.

    With ``show=None`` it times the first entries and turns itself on only if
    the whole check looks like taking more than ``PROGRESS_AFTER_SECONDS``. It
    rewrites its line at most twice a second.
    """

    def __init__(self, total: int, show: bool | None):
        self.total, self.show, self.done = total, show, 0
        self.start = self.last = time.perf_counter()
        self.shown = False

    def step(self, name: str) -> None:
        self.done += 1
        now = time.perf_counter()
        if self.show is None and self.done == min(20, self.total):
            self.show = (now - self.start) / self.done * self.total > PROGRESS_AFTER_SECONDS
        if self.show and (now - self.last >= 0.5 or self.done == self.total):
            self.last = now
            sys.stderr.write(f"\rgradcheck: {self.done}/{self.total} entries checked ({name})")
            sys.stderr.flush()
            self.shown = True

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\n")
