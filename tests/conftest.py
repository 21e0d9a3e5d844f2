"""Shared fixtures. MNIST comes from $TINYNN_DATA; in CI its absence is a failure, not a skip."""

from __future__ import annotations

import contextlib
import os
import threading

import pytest

import tinynn
from tinynn.datasets.fetch import DownloadError

HOW_TO_RUN = ("MNIST is not on this machine: run `TINYNN_DATA=/path/to/datasets make test` "
              "(a directory holding mnist/ or the four MNIST files) to include these tests")


@pytest.fixture(scope="session")
def mnist_data():
    """((x_train, y_train), (x_test, y_test)) of the real MNIST.

    Missing (not found, and not downloadable here): one skip reason, shared by every
    test that needs it; in CI (``$CI`` set) a failure with the loader's full message.
    A damaged dataset is never a skip.
    """
    try:
        return tinynn.datasets.mnist.load_data()
    except (FileNotFoundError, DownloadError) as e:
        if os.environ.get("CI"):
            pytest.fail(f"MNIST is required in CI: {e}")
        pytest.skip(HOW_TO_RUN)


def pytest_collection_modifyitems(items):
    """Every test that reads MNIST is an ``mnist`` test (the tiers: CONTRIBUTING.md)."""
    for item in items:
        if "mnist_data" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.mnist)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Report every MNIST skip at one place, so that ``-ra`` folds them into one line."""
    report = yield
    if report.skipped and isinstance(report.longrepr, tuple) and HOW_TO_RUN in str(
            report.longrepr[2]):
        report.longrepr = (__file__, 1, report.longrepr[2])
    return report


BACKENDS = sorted(tinynn.backend.BACKENDS)


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Run a test once per kernel backend, restoring the previous choice afterwards."""
    with tinynn.backend.using(request.param):
        yield request.param


@pytest.fixture(scope="session")
def serving():
    """``with serving(server) as address:``: the server runs on a thread of its own until
    the block ends."""
    return _serving


@contextlib.contextmanager
def _serving(server):
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
