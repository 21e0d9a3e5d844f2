"""``callbacks.BackupAndRestore`` (issue 22): a fit killed at any moment and started again
with the same call ends with the weights, optimizer state and History of an uninterrupted
fit, bit for bit; a backup that does not fit is refused and nothing changes."""

import os

import numpy as np
import pytest

import tinynn
from tinynn import callbacks, layers, training
from tinynn.saving import ModelFileError

RNG = np.random.default_rng(1)
X = RNG.random((300, 12)).astype(np.float32)
Y = RNG.integers(0, 4, 300)
BATCH = 32  # 8 steps an epoch of the 240 training rows (validation_split=0.2)


class KilledError(Exception):
    """What a kill is to this process: the fit stops where it is, nothing is cleaned up."""


class KillAt(callbacks.Callback):
    """Stops the fit after its ``at``-th step in this run (every batch, one step a call)."""

    batch_interval = 1

    def __init__(self, at: int):
        self.at, self.steps = at, 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.steps == self.at:
            raise KilledError


def make_model(seed: int | None = 0) -> tinynn.Sequential:
    if seed is not None:
        tinynn.utils.set_random_seed(seed)
    model = tinynn.Sequential([tinynn.Input(shape=(12,)), layers.Dense(16, activation="relu"),
                               layers.Dropout(0.3), layers.Dense(4, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def steering():
    """Callbacks whose state a backup must hold for the resumed fit to decide the same."""
    # (Uninterrupted: the rate halves after epoch 4, and training stops after epoch 5 of 6.)
    return [callbacks.EarlyStopping(monitor="val_loss", patience=2, min_delta=0.012),
            callbacks.ReduceLROnPlateau(monitor="val_loss", patience=1, factor=0.5,
                                        min_delta=0.01),
            callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.9)]


def fit(model, backup, extra=(), epochs=6, batch_size=BATCH):
    return model.fit(X, Y, batch_size=batch_size, epochs=epochs, validation_split=0.2,
                     callbacks=[*extra, *steering(), backup], verbose=0)


def state(model, history) -> dict:
    opt = model.optimizer
    return {"weights": model.get_weights(), "iterations": opt.iterations,
            "learning_rate": opt.learning_rate,
            "slots": [a for s in opt.slots for a in s.values()],
            "dropout": [layer.state["step"].copy() for layer in model.leaf_layers
                        if layer.state],
            "history": history.history, "epochs": history.epoch}


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], list) and a[key] and isinstance(a[key][0], np.ndarray):
            assert len(a[key]) == len(b[key])
            for x, y in zip(a[key], b[key]):
                np.testing.assert_array_equal(x, y, err_msg=key)  # bit for bit
        else:
            assert a[key] == b[key], key


def uninterrupted(tmp_path, save_freq) -> dict:
    model = make_model()
    history = fit(model, callbacks.BackupAndRestore(tmp_path / "reference", save_freq))
    assert history.epoch == [0, 1, 2, 3, 4]  # the steering callbacks acted
    assert model.optimizer.learning_rate == pytest.approx(0.001 * 0.9**5 / 2)
    return state(model, history)


@pytest.mark.parametrize("save_freq, kills", [
    (5, [3]),  # before the first backup: the resumed fit starts afresh
    (5, [11]),  # within an epoch
    (5, [7, 9, 30]),  # three kills; the last after a backup written by a resumed fit
    (4, [9, 8]),  # after the backup at an epoch's last step: resumes at its on_epoch_end
    ("epoch", [13, 20]),
])
def test_a_killed_fit_resumes_bit_for_bit(backend, tmp_path, save_freq, kills):
    reference = uninterrupted(tmp_path, save_freq)
    folder = tmp_path / "backup"
    for i, at in enumerate(kills):
        # A restart draws other initial weights and Dropout seeds: the backup's replace them.
        model = make_model(seed=0 if i == 0 else 100 + i)
        with pytest.raises(KilledError):
            fit(model, callbacks.BackupAndRestore(folder, save_freq), extra=[KillAt(at)])
        assert (folder / "backup.npz").exists() == (i > 0 or at >= (
            5 if save_freq == 5 else 4 if save_freq == 4 else 8))
    # Unseeded, as the Keras scripts are, when there is a backup; else the fit starts afresh.
    model = make_model(seed=None if (folder / "backup.npz").exists() else 0)
    history = fit(model, callbacks.BackupAndRestore(folder, save_freq))
    assert_same(state(model, history), reference)
    assert not folder.exists()  # deleted at the end, the folder with it


def test_the_resumed_fit_runs_only_the_steps_after_the_backup(tmp_path):
    folder = tmp_path / "backup"
    with pytest.raises(KilledError):
        fit(make_model(), callbacks.BackupAndRestore(folder, 5), extra=[KillAt(13)])
    counter = KillAt(at=0)  # never fires; counts the steps this run takes
    fit(make_model(seed=3), callbacks.BackupAndRestore(folder, 5), extra=[counter])
    assert counter.steps == 5 * 8 - 10  # the backup after step 10 of 40


def test_any_thread_count_resumes_the_same(tmp_path, monkeypatch):
    tinynn.set_backend("numba")
    try:
        monkeypatch.setenv("TINYNN_THREADS", "1")
        reference = uninterrupted(tmp_path, 5)
        folder = tmp_path / "backup"
        with pytest.raises(KilledError):
            fit(make_model(), callbacks.BackupAndRestore(folder, 5), extra=[KillAt(17)])
        monkeypatch.setenv("TINYNN_THREADS", "2")
        model = make_model(seed=7)
        history = fit(model, callbacks.BackupAndRestore(folder, 5))
        assert_same(state(model, history), reference)
    finally:
        tinynn.set_backend("numba")


def test_backups_end_compiled_calls_without_one_step_calls(monkeypatch):
    """save_freq=k ends the calls of many compiled steps at every k-th step of the fit, and
    nowhere else that it need not."""
    place = training.Place(steps=10, totals=training.RunningMeans([]))
    calls = training.Calls(every_batch=False, period=4)
    calls.size = 100
    ends, place.epoch = [], 0
    for epoch in range(3):
        place.epoch, first = epoch, 0
        while first < place.steps:
            first = calls.last(first, place)
            ends.append(epoch * 10 + first)
    assert ends == [4, 8, 10, 12, 16, 20, 24, 28, 30]
    assert training.call_period([callbacks.BackupAndRestore("b", 6),
                                 callbacks.BackupAndRestore("c", 4), callbacks.History()]) == 2
    assert not training.wants_batches(callbacks.BackupAndRestore("b", 6))
    assert not training.wants_batches(callbacks.BackupAndRestore("b", "epoch"))
    assert training.call_period([callbacks.BackupAndRestore("b", "epoch")]) == 0


def test_a_backup_is_kept_after_an_interruption_and_deleted_after_a_whole_fit(tmp_path):
    folder = tmp_path / "backup"
    with pytest.raises(KilledError):
        fit(make_model(), callbacks.BackupAndRestore(folder, "epoch"), extra=[KillAt(20)])
    with np.load(folder / "backup.npz", allow_pickle=False) as stored:  # arrays, JSON text
        assert "config" in stored.files and all(stored[n] is not None for n in stored.files)
    fit(make_model(), callbacks.BackupAndRestore(folder, "epoch", delete_checkpoint=False))
    assert sorted(os.listdir(folder)) == ["backup.npz"]  # kept, as asked
    (folder / "mine.txt").write_text("a user's file")
    model = make_model()
    history = fit(model, callbacks.BackupAndRestore(folder, "epoch"))
    assert sorted(os.listdir(folder)) == ["mine.txt"]  # the folder stays: it is not empty
    assert len(history.epoch) == len(history.history["loss"])


def test_double_checkpoint_resumes_from_the_previous_backup_if_the_latest_is_damaged(
        backend, tmp_path):
    reference = uninterrupted(tmp_path, 5)
    folder = tmp_path / "backup"
    with pytest.raises(KilledError):
        fit(make_model(), callbacks.BackupAndRestore(folder, 5, double_checkpoint=True),
            extra=[KillAt(23)])
    assert sorted(os.listdir(folder)) == ["backup.npz", "backup.previous.npz"]
    (folder / "backup.npz").write_bytes(b"damaged by a disk")
    counter = KillAt(at=0)
    model = make_model(seed=5)
    history = fit(model, callbacks.BackupAndRestore(folder, 5, double_checkpoint=True),
                  extra=[counter])
    assert counter.steps == 40 - 15  # from the previous backup, after step 15
    assert_same(state(model, history), reference)
    assert not folder.exists()


# ---------------------------------------------------------------- refused, nothing changed


def interrupted_backup(tmp_path):
    folder = tmp_path / "backup"
    with pytest.raises(KilledError):
        fit(make_model(), callbacks.BackupAndRestore(folder, 5), extra=[KillAt(12)])
    return folder


def assert_refused(model, folder, error, match, **fit_options):
    before = (model.get_weights(), model.optimizer.iterations,
              (folder / "backup.npz").read_bytes(), tinynn.utils.generator().bit_generator.state)
    with pytest.raises(error, match=match):
        model.fit(X, Y, callbacks=[*steering(), callbacks.BackupAndRestore(folder, 5)],
                  verbose=0, **{"batch_size": BATCH, "validation_split": 0.2, "epochs": 6,
                                **fit_options})
    after = (model.get_weights(), model.optimizer.iterations,
             (folder / "backup.npz").read_bytes(), tinynn.utils.generator().bit_generator.state)
    for a, b in zip(before[0], after[0]):
        np.testing.assert_array_equal(a, b)
    assert before[1:] == after[1:]


def test_a_backup_of_another_model_is_refused(tmp_path):
    folder = interrupted_backup(tmp_path)
    tinynn.utils.set_random_seed(0)
    other = tinynn.Sequential([tinynn.Input(shape=(12,)), layers.Dense(8, activation="relu"),
                               layers.Dense(4, activation="softmax")])
    other.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    assert_refused(other, folder, ValueError, "holds other layers than this model's")
    sgd = make_model()
    sgd.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    assert_refused(sgd, folder, ValueError, "written with the optimizer Adam, this model has SGD")


def test_a_backup_of_another_batch_size_or_callbacks_is_refused(tmp_path):
    folder = interrupted_backup(tmp_path)
    assert_refused(make_model(), folder, ValueError, r"8 steps an epoch; this one has 4 \(",
                   batch_size=64)
    model = make_model()
    with pytest.raises(ValueError, match="callbacks .*'EarlyStopping'.*this one has"):
        model.fit(X, Y, batch_size=BATCH, epochs=6, validation_split=0.2, verbose=0,
                  callbacks=[callbacks.BackupAndRestore(folder, 5)])
    assert_refused(make_model(), folder, ValueError, "written in epoch 2, after step 2; this "
                   "fit has 1 epochs", epochs=1)


def test_a_damaged_backup_is_refused_naming_it(tmp_path):
    folder = interrupted_backup(tmp_path)
    whole = (folder / "backup.npz").read_bytes()
    (folder / "backup.npz").write_bytes(whole[: len(whole) // 2])
    assert_refused(make_model(), folder, ModelFileError,
                   f"BackupAndRestore: {folder / 'backup.npz'}: .*Delete it to train from")


@pytest.mark.parametrize("arguments, error, match", [
    ((None,), TypeError, "backup_dir must be a folder's path, got None"),
    (("",), TypeError, "backup_dir"),
    (("b", 0), ValueError, "save_freq"),
    (("b", "batch"), ValueError, "save_freq must be 'epoch' or a number of batches"),
    (("b", 2.5), TypeError, "save_freq"),
    (("b", "epoch", "yes"), TypeError, "double_checkpoint"),
    (("b", "epoch", False, 1), TypeError, "delete_checkpoint"),
])
def test_bad_arguments_are_refused_by_name(arguments, error, match):
    with pytest.raises(error, match=match):
        callbacks.BackupAndRestore(*arguments)


class Counter(callbacks.Callback):
    """A user's callback whose count a backup keeps; or whose state it cannot keep."""

    state_attributes = ("count",)

    def __init__(self, count=0):
        self.count = count

    def on_epoch_end(self, epoch, logs=None):
        if isinstance(self.count, int):
            self.count += 1


def test_a_users_callback_state_is_backed_up_or_refused_by_name(tmp_path):
    folder = tmp_path / "backup"
    with pytest.raises(KilledError):
        fit(make_model(), callbacks.BackupAndRestore(folder, 5), extra=[Counter(), KillAt(20)])
    counter = Counter()
    fit(make_model(), callbacks.BackupAndRestore(folder, 5), extra=[counter])
    assert counter.count == 5  # one epoch before the backup, four after
    for bad in (object(), (1, 2), np.float32(0.5), {0: 1}, [np.zeros(3, np.int64)]):
        with pytest.raises(TypeError, match=r"Counter.count holds .*(a backup cannot|not float)"):
            fit(make_model(), callbacks.BackupAndRestore(folder, 5), extra=[Counter(bad)])
        assert not (folder / "backup.npz").exists()  # nothing written


@pytest.mark.parametrize("save_freq", [10, "epoch"])
def test_a_compiled_fit_with_backups_runs_many_steps_a_call(tmp_path, monkeypatch, save_freq):
    from tinynn.compiled import engine

    calls = []
    run = engine.CompiledRunner.run
    monkeypatch.setattr(engine.CompiledRunner, "run",
                        lambda self, *args: calls.append(args[3:5]) or run(self, *args))
    tinynn.set_backend("numba")
    model = make_model()
    model.fit(X, Y, batch_size=8, epochs=2, verbose=0,
              callbacks=[callbacks.BackupAndRestore(tmp_path / "b", save_freq)])
    assert model.optimizer.iterations == 2 * 38
    assert len(calls) < 12  # not one step a call (76 calls)
    if save_freq == 10:  # every 10th step of the fit ends a call
        epochs = np.cumsum([first == 0 for first, _ in calls]) - 1
        ends = {int(epoch) * 38 + last for epoch, (_, last) in zip(epochs, calls)}
        assert set(range(10, 77, 10)) <= ends


# ---------------------------------------------------------------- found by review


class StopAt(callbacks.Callback):
    """Stops the fit at the end of epoch ``epoch`` (as EarlyStopping would)."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            self.model.stop_training = True


class DiesAtTheEnd(callbacks.Callback):
    """Killed as the fit returns: after the last backup, before it is deleted."""

    def on_train_end(self, logs=None):
        raise KilledError


@pytest.mark.parametrize("save_freq", ["epoch", 4])
def test_a_fit_that_stopped_stays_stopped_when_started_again(tmp_path, save_freq):
    folder = tmp_path / "backup"
    reference = make_model()
    history = fit(reference, callbacks.BackupAndRestore(tmp_path / "r", save_freq),
                  extra=[StopAt(2)])
    assert history.epoch == [0, 1, 2]
    with pytest.raises(KilledError):
        fit(make_model(), callbacks.BackupAndRestore(folder, save_freq),
            extra=[StopAt(2), DiesAtTheEnd()])
    assert (folder / "backup.npz").exists()
    model = make_model(seed=9)
    again = fit(model, callbacks.BackupAndRestore(folder, save_freq), extra=[StopAt(2)])
    assert_same(state(model, again), state(reference, history))  # no epoch more
    kept = callbacks.BackupAndRestore(folder, save_freq, delete_checkpoint=False)
    model = make_model()
    fit(model, kept, extra=[StopAt(2)])
    fit(model, callbacks.BackupAndRestore(folder, save_freq), extra=[StopAt(2)])
    assert model.optimizer.iterations == reference.optimizer.iterations  # re-run: nothing


class Scale(layers.Layer):
    """A user's layer: y = x · s, one s per feature."""

    def build(self, input_shape):
        super().build(input_shape)
        self.params["scale"] = np.ones(input_shape[-1], np.float32)
        self.grads["scale"] = np.zeros(input_shape[-1], np.float32)

    def forward(self, x, training=False):
        self.x = x
        return x * self.params["scale"]

    def backward(self, dy):
        self.grads["scale"][...] = (dy * self.x).sum(axis=0)
        return dy * self.params["scale"]


class SignDescent(tinynn.optimizers.Optimizer):
    """A user's optimizer: w ← w − lr · sign(g)."""

    def update_step(self, gradient, variable, slots):
        variable -= np.float32(self.learning_rate) * np.sign(gradient)


def test_a_model_of_a_users_layer_and_optimizer_resumes_bit_for_bit(backend, tmp_path):
    def model_with_my_parts(seed):
        tinynn.utils.set_random_seed(seed)
        model = tinynn.Sequential([tinynn.Input(shape=(12,)), Scale(), layers.Dense(4)])
        model.compile(SignDescent(0.01), "sparse_categorical_crossentropy")
        return model

    def run(model, extra=()):
        return model.fit(X, Y, batch_size=BATCH, epochs=3, verbose=0,
                         callbacks=[*extra, callbacks.BackupAndRestore(tmp_path / "b", 5)])

    reference = model_with_my_parts(0)
    run(reference)
    with pytest.raises(KilledError):
        run(model_with_my_parts(0), [KillAt(17)])
    model = model_with_my_parts(4)
    run(model)
    for a, b in zip(model.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def tamper(folder, change) -> None:
    """Rewrite the backup's config JSON through ``change(config)``."""
    import json

    path = folder / "backup.npz"
    with np.load(path) as stored:
        members = {name: stored[name] for name in stored.files}
    config = json.loads(str(members["config"]))
    change(config)
    members["config"] = np.array(json.dumps(config))
    np.savez(path, **members)


def callback_state(config, name):
    return next(c["state"] for c in config["training"]["callbacks"] if c["class"] == name)


@pytest.mark.parametrize("change, match", [
    (lambda c: c["training"].update(epoch=10**12), "written in epoch 1000000000001"),
    (lambda c: c["training"].update(step=-1), r"step=-1, not a count"),
    (lambda c: c["training"].update(totals=[float("nan"), 0, 64]), "running sums"),
    (lambda c: c["training"].update(totals=[1.0, 90, 64]), "running sums"),
    (lambda c: c["training"].update(totals=[1.0, 9, 65]), "running sums"),
    (lambda c: c["training"].update(rng={"state": 1}), "no valid generator state"),
    (lambda c: c["training"].update(stop_training="no"), "stop_training='no'"),
    (lambda c: c["training"].update(callbacks=[{"class": ["x"]}]), "callbacks"),
    (lambda c: callback_state(c, "History")["epoch"].update(value=5), "History.epoch = '5'"),
    (lambda c: callback_state(c, "EarlyStopping")["wait"].update(value="x"),
     "EarlyStopping.wait = 'x', where the callback holds a int"),
    (lambda c: callback_state(c, "EarlyStopping")["best"].update(value=[1]),
     "EarlyStopping.best"),
    (lambda c: callback_state(c, "EarlyStopping").update(best={"arrays": ["nowhere"]}),
     "cannot read"),
    (lambda c: c["compile"]["optimizer"]["config"].update(beta_1=0.5),
     "optimizer settings"),
    (lambda c: c["compile"]["optimizer"]["config"].update(learning_rate=-1.0),
     "learning rate -1.0"),
    (lambda c: c["layers"][1]["config"].update(seed=-3), "seed -3"),
])
def test_an_edited_backup_is_refused_and_nothing_changes(tmp_path, change, match):
    folder = interrupted_backup(tmp_path)
    tamper(folder, change)
    assert_refused(make_model(), folder, ValueError, match)


def test_a_backup_folder_that_cannot_be_is_refused_before_training(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    model = make_model()
    for folder in (tmp_path / "file", tmp_path / "file" / "below"):
        with pytest.raises(OSError, match="BackupAndRestore: .*backup_dir"):
            fit(model, callbacks.BackupAndRestore(folder))
        assert model.optimizer.iterations == 0


def test_two_backups_in_one_fit_are_refused(tmp_path):
    with pytest.raises(ValueError, match="at most one BackupAndRestore, got 2"):
        fit(make_model(), callbacks.BackupAndRestore(tmp_path / "a"),
            extra=[callbacks.BackupAndRestore(tmp_path / "b")])


def test_double_checkpoint_keeps_the_readable_backup_after_resuming_from_it(tmp_path):
    folder = tmp_path / "backup"
    double = dict(save_freq=5, double_checkpoint=True)
    with pytest.raises(KilledError):
        fit(make_model(), callbacks.BackupAndRestore(folder, **double), extra=[KillAt(23)])
    (folder / "backup.npz").write_bytes(b"damaged")
    good = (folder / "backup.previous.npz").read_bytes()
    with pytest.raises(KilledError):  # resumes from the previous; killed after a new backup
        fit(make_model(), callbacks.BackupAndRestore(folder, **double), extra=[KillAt(6)])
    assert (folder / "backup.previous.npz").read_bytes() == good  # not the damaged one
    assert (folder / "backup.npz").read_bytes()[:2] == b"PK"  # the new backup, whole
