"""Shared fixtures. MNIST comes from $TINYNN_DATA; in CI its absence is a failure, not a skip."""

from __future__ import annotations

import os

import pytest

import tinynn


@pytest.fixture(scope="session")
def mnist_data():
    """((x_train, y_train), (x_test, y_test)) of the real MNIST."""
    try:
        return tinynn.datasets.mnist.load_data()
    except FileNotFoundError as e:
        if os.environ.get("CI"):
            pytest.fail(f"MNIST is required in CI: {e}")
        pytest.skip(f"MNIST not available: {e}")


BACKENDS = sorted(tinynn.backend.BACKENDS)


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Run a test once per kernel backend, restoring the previous choice afterwards."""
    with tinynn.backend.using(request.param):
        yield request.param
