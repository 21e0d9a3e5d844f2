"""Where a training step's time goes: each compiled kernel of a fused step, timed alone.

    python benchmarks/kernels.py                       # the four models, all of MNIST
    python benchmarks/kernels.py --models hidden --limit 600 --repeat 50   # a quick check

For each model (``specs.MODELS``, on the numba backend): trains one epoch (so
the weights and the optimizer's state are realistic), then walks the model's op
table (``tinynn.compiled.engine.plan``) as ``kernels.fused.train_steps`` does, timing
every loop kernel of ``kernels.compiled`` that one step calls, on one batch of
real MNIST rows, as the median of many calls (each includes ~0.3 µs of calling
from Python). Then the whole step: ``engine.CompiledRunner.run`` over the
epoch's steps in calls sized by ``training.Calls``, as ``fit`` runs them.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import specs  # noqa: E402

import tinynn  # noqa: E402
from tinynn import training  # noqa: E402
from tinynn.callbacks import CallbackList  # noqa: E402
from tinynn.compiled import engine, fused, loops, table, updates  # noqa: E402
from tinynn.compiled import kernels as compiled  # noqa: E402

MODELS = specs.MODELS


def median_us(fn, *args, repeat: int) -> float:
    """Median µs of ``fn(*args)`` over ``repeat`` calls, after one warm-up call."""
    fn(*args)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e6


def trained_model(name: str, x, y):
    """The model ``name`` after one epoch of fit on (x, y)."""
    spec = MODELS[name]
    tinynn.utils.set_random_seed(0)
    model = tinynn.Sequential(specs.keras_layers(tinynn, spec))
    model.compile(**specs.keras_compile_arguments(tinynn, spec))
    model.fit(x, y, batch_size=spec.batch_size, epochs=1, verbose=0)
    return model


def step_kernels(model, data, rows: np.ndarray, repeat: int) -> dict[str, float]:
    """µs of each kernel one fused step calls on the batch ``rows``, in the step's order."""
    plan = engine.plan(model, training=True)
    runner = engine.CompiledRunner(model, plan)
    indptr, indices, values = data.indptr, data.indices, data.values
    ops, n = plan.ops, len(rows)
    identity = np.arange(n)
    outs = [np.empty((n, w), np.float32) for w in ops[:, 2]]
    grads = [np.empty_like(o) for o in outs]
    scales = [np.ones_like(o) for o in outs]
    timings = {}

    def timed(label, fn, *args):
        timings[label] = median_us(fn, *args, repeat=repeat)

    def layer(arg):
        return f"layer {arg + 1}"

    def activation(code):
        return table.ACTIVATIONS[code]

    # Forward, op by op (as fused._forward).
    prev = None
    if ops[0, 0] != fused.AFFINE:
        prev = np.empty((n, plan.Ws[0].shape[0]), np.float32)
        timed("gather the batch's rows", fused._gather, indptr, indices, values, rows, prev)
    for i, (kind, arg, _), parameter in zip(range(len(ops)), ops, plan.parameters):
        if kind == fused.AFFINE and i == 0:
            timed(f"{layer(arg)}: sparse x · W + b", loops._sparse_affine, indptr, indices,
                  values, rows, plan.Ws[arg], plan.bs[arg], outs[i])
        elif kind == fused.AFFINE:
            timed(f"{layer(arg)}: x · W + b", loops._affine, prev, identity, plan.Ws[arg],
                  plan.bs[arg], outs[i])
        elif kind == fused.ACTIVATE:
            timed(f"op {i + 1}: {activation(arg)}", loops._activate, prev, outs[i], arg,
                  parameter)
        else:
            d = plan.dropouts[arg]
            timed(f"op {i + 1}: dropout mask", loops._dropout, prev, d.rate, d.seed, 0,
                  0, outs[i], scales[i])
        prev = outs[i]

    # The loss and its gradient (Keras's logits rule decides what it reads).
    top = len(ops) - 2 if runner.loss_rule.on_logits else len(ops) - 1
    rule = type(runner.loss_rule)  # (its class names the formula: fused.LOSS_RULES)
    loop = getattr(loops, f"_{'categorical_' if rule.categorical else ''}"
                          f"{'softmax' if rule.softmax else 'probability'}_cross_entropy")
    clip = () if rule.softmax else (runner.loss_rule.clip_epsilon,)
    timed("loss and its gradient", loop, outs[top],
          data.targets if rule.categorical else data.labels, rows, len(rows), *clip, grads[top])

    # Backward, op by op, each affine op's update after its gradients (on copies,
    # so that timing does not move the model).
    opt = model.optimizer
    arguments = np.array(opt.update_arguments(opt.iterations + 1), np.float64)
    first_affine = int(np.argmax(ops[:, 0] == fused.AFFINE))
    kind_name = table.UPDATES[runner.update].removesuffix("_update")
    for i in range(top, first_affine - 1, -1):
        kind, arg = ops[i, 0], ops[i, 1]
        if kind == fused.ACTIVATE:
            timed(f"op {i + 1}: {activation(arg)} gradient", loops._activate_backward,
                  grads[i], outs[i], arg, plan.parameters[i], grads[i - 1])
        elif kind == fused.DROPOUT:
            timed(f"op {i + 1}: dropout gradient (allocates)", compiled.dropout_backward,
                  grads[i], scales[i])
        else:
            W, b = plan.Ws[arg], plan.bs[arg]
            dW, db = np.empty_like(W), np.empty_like(b)
            if i == 0:
                timed(f"{layer(arg)}: sparse dW, db", loops._sparse_weight_grads, indptr,
                      indices, values, rows, grads[i], dW, db, 0, len(dW))
            else:
                timed(f"{layer(arg)}: dW, db", loops._weight_grads, outs[i - 1], identity,
                      grads[i], dW, db)
                if i > first_affine:
                    timed(f"{layer(arg)}: dx", loops._input_grads, grads[i], W,
                          grads[i - 1].copy())
            p = runner.fused_model.param_index[arg]
            for name, g, q in (("W", dW, p), ("b", db, p + 1)):
                if g.size:
                    update, n_slots, n_arguments = updates.LOOPS[runner.update]
                    slots = [runner.S[k][q].copy() for k in range(n_slots)]
                    timed(f"{layer(arg)}: {kind_name} on {name} ({g.size:,} weights)",
                          update, runner.P[q].copy(), g.reshape(-1), *slots,
                          *arguments[:n_arguments])
    return timings


def whole_step_us(model, data, n: int, batch_size: int) -> float:
    """µs per step of an epoch run as fit runs it (``training.train_epoch``, its calls
    sized by ``training.Calls``); the median of three epochs."""
    runner = engine.CompiledRunner(model, engine.plan(model, training=True))
    steps = -(-n // batch_size)
    calls, hooks = training.Calls(every_batch=False), CallbackList([], model)
    per_epoch = []
    for seed in range(3):
        order = np.random.default_rng(seed).permutation(n)
        start = time.perf_counter()
        place = training.Place(steps, training.RunningMeans([]), epoch=seed)
        training.train_epoch(model, runner, data, order, batch_size, calls, hooks, place, 0)
        per_epoch.append((time.perf_counter() - start) / steps)
    return float(np.median(per_epoch)) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # A convolution trains step by step (tinynn.compiled.table.STEP_BY_STEP): no fused step.
    fusable = [m for m, spec in MODELS.items() if m not in specs.TINYNN_ONLY
               and not any(layer[0] == "conv2d" for layer in spec.layers)]
    parser.add_argument("--models", default=",".join(fusable))
    parser.add_argument("--limit", type=int, default=None,
                        help="train on the first LIMIT samples only (a quick check)")
    parser.add_argument("--repeat", type=int, default=2000, help="calls per kernel timed")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    tinynn.set_backend("numba")
    for name in args.models.split(","):
        if name not in fusable:
            raise SystemExit(f"--models: {name!r} is not one of {fusable}")
        spec = MODELS[name]
        x, y, _, _ = specs.load_mnist(spec, args.data_dir, args.limit)
        model = trained_model(name, x, y)
        runner = engine.CompiledRunner(model, engine.plan(model, training=True))
        data = runner.prepare(x, y)
        rows = np.random.default_rng(0).permutation(len(x))[:spec.batch_size]
        timings = step_kernels(model, data, rows, args.repeat)
        step = whole_step_us(model, data, len(x), spec.batch_size)
        print(f"\n{name} model ({textwrap.shorten(spec.title, 80)}), one step of batch "
              f"{len(rows)} (µs, median):\n")
        print("| kernel | µs |\n|---|---:|")
        for kernel, us in timings.items():
            print(f"| {kernel} | {us:.1f} |")
        print(f"| sum of the kernels | {sum(timings.values()):.1f} |")
        print(f"| whole step, as fit runs it | {step:.1f} |")


if __name__ == "__main__":
    main()
