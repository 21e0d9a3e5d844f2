"""Seconds per epoch (median of epochs 2 … E) of the notebook's two models, seed 0, for
comparing two trees of tinynn on one machine, e.g. before and after a change:

    PYTHONPATH=OTHER_TREE TINYNN_DATA=../shared/datasets .venv/bin/python benchmarks/seed_speed.py 5
"""
import json
import sys
import time

import numpy as np

import tinynn
from tinynn.callbacks import Callback


class EpochTimes(Callback):
    def __init__(self):
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self.start)


(x, y), (xt, yt) = tinynn.datasets.mnist.load_data()
x = x.reshape(len(x), -1).astype(np.float32) / np.float32(255)
out = {}
for name, layers in [("simple", [(10, "sigmoid")]), ("hidden", [(100, "relu"), (10, "sigmoid")])]:
    tinynn.utils.set_random_seed(0)
    model = tinynn.Sequential([tinynn.layers.Dense(u, activation=a) for u, a in layers])
    model.build((None, 784))
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    timer = EpochTimes()
    model.fit(x, y, epochs=int(sys.argv[1]), verbose=0, callbacks=[timer])
    out[name] = float(np.median(timer.times[1:]))
print(json.dumps(out))
