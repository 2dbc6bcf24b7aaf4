"""The network: the seed's ``LSTM(units)`` then ``Dense(1)``, compiled with adam and mse,
or, with a distributional loss (``laplace``), ``Dense(2)`` giving the location and the
scale of the next scaled log return, fed the recent volatility as a second input.

Keras and TensorFlow are imported lazily so that stages without a model
(ingest, sequences) start quickly.

**Worker processes.** TensorFlow keeps about 10 MB of every network a
process builds, fits and predicts with, for as long as the process lives:
``keras.backend.clear_session()``, garbage collection and ``malloc_trim``
do not give it back (``benchmarks/train_memory.py`` measures it). Training
therefore runs its networks in worker processes (``Workers``), each
replaced after a few networks, so a long-lived process (``pricecast serve``,
a Prefect worker) or a training of many per-ticker networks stays flat.
"""

from __future__ import annotations

import functools
import logging
import logging.handlers
import multiprocessing
import os
import queue
import random
import sys
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from pipeline.orphans import die_with_parent

if TYPE_CHECKING:
    import keras

logger = logging.getLogger(__name__)

Job = TypeVar("Job")
Outcome = TypeVar("Outcome")

# TensorFlow's C++ logging: errors surface as Python exceptions anyway.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@functools.cache
def import_keras() -> ModuleType:
    """Import TensorFlow and Keras once, without their start-up chatter.

    TensorFlow writes notices (oneDNN, CUDA probing) straight to file
    descriptor 2 while it starts, before its own log level applies; they are
    discarded. Exceptions still propagate.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import keras
        import tensorflow as tf

        tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    return keras


def seed_everything(seed: int) -> None:
    """Reset Keras' global state, then seed Python, NumPy and TensorFlow and make
    TensorFlow's ops deterministic. Call it right before building or loading the
    networks of one training, so nothing left by earlier models changes the draw."""
    keras = import_keras()
    import tensorflow as tf

    keras.backend.clear_session()
    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


#: Samples times epochs of one fit from which its steps are compiled with XLA
#: (``compile_with_xla``): compiling costs about 5 CPU seconds a network, and an epoch
#: then takes a fifth to two fifths less CPU (``benchmarks/xla.py``), so it pays from a few
#: million; smaller fits (every fine-tune, the tests' tiny models) are left as they are.
XLA_MIN_SAMPLE_EPOCHS = 2_000_000


def compile_with_xla(network: keras.Model) -> bool:
    """Have Keras compile ``network``'s training and evaluation steps with XLA; whether it
    took. Call it before the network's first ``fit``.

    Keras leaves XLA off on a machine without an accelerator, and refuses it once
    TensorFlow's ops are deterministic (``seed_everything``), since some ops have no
    deterministic XLA kernel. This network's ops (an LSTM, a dense layer, adam) do:
    fits compiled so repeat to the bit (tested) and cost less CPU (``benchmarks/xla.py``).
    The flag is Keras' own attribute (``Trainer._jit_compile``, Keras 3); were it ever
    renamed, the network stays as Keras compiled it.
    """
    if not hasattr(network, "_jit_compile") or not hasattr(network, "train_function"):
        return False
    network._jit_compile = True
    # Steps made before (none for a network not yet fitted) are made again, compiled.
    network.train_function = None
    network.test_function = None
    return network.jit_compile is True


#: Losses under which the network predicts a distribution: its two outputs are the
#: location and the (raw) scale of a Laplace law of the target, fitted by maximum
#: likelihood. The location is the target's median, as under ``mae``.
DISTRIBUTION_LOSSES = ("laplace",)
#: The smallest scale the network can predict, in units of the scaled target.
MINIMUM_NETWORK_SCALE = 1e-3


def is_distributional(loss: str) -> bool:
    """Whether networks trained with ``loss`` predict a location and a scale."""
    return loss in DISTRIBUTION_LOSSES


def network_scale(raw: np.ndarray) -> np.ndarray:
    """The Laplace scale ``b`` from the network's raw second output: ``softplus + 1e-3``."""
    raw = np.asarray(raw, dtype=float)
    return np.logaddexp(0.0, raw) + MINIMUM_NETWORK_SCALE


@functools.cache
def laplace_loss() -> Any:
    """The Laplace negative log-likelihood ``log b + |y - mu| / b`` (constant dropped)
    of targets ``(n, 1)`` under outputs ``(n, 2)`` (location, raw scale), as a
    serialisable Keras loss."""
    keras = import_keras()
    ops = keras.ops

    @keras.saving.register_keras_serializable(package="pricecast", name="laplace_nll")
    def laplace_nll(y_true: Any, y_pred: Any) -> Any:
        target = ops.reshape(y_true, (-1,))
        location = y_pred[:, 0]
        scale = ops.softplus(y_pred[:, 1]) + MINIMUM_NETWORK_SCALE
        return ops.log(scale) + ops.abs(target - location) / scale

    return laplace_nll


def network_loss(network: Any, targets: np.ndarray, outputs: np.ndarray) -> float:
    """The mean of ``network``'s compiled loss over targets ``(n,)`` (in the scale it was
    trained in) and its outputs ``(n, outputs)``: what ``network.evaluate`` reports,
    from outputs already computed (float32, as the network computes)."""
    keras = import_keras()
    loss = network.loss
    function = keras.losses.get(loss) if isinstance(loss, str) else loss
    values = function(
        np.asarray(targets, dtype=np.float32).reshape(-1, 1),
        np.asarray(outputs, dtype=np.float32),
    )
    return float(np.mean(keras.ops.convert_to_numpy(values), dtype=np.float64))


def custom_objects() -> dict[str, Any]:
    """What ``keras.models.load_model`` needs to compile a saved network again."""
    loss = laplace_loss()
    return {"laplace_nll": loss, "pricecast>laplace_nll": loss}


def build_model(
    window: int, units: int, learning_rate: float, loss: str = "mse", seed: int = 0
) -> keras.Model:
    """A fresh, compiled network for windows of ``window`` scaled closes.

    With a distributional ``loss`` the input has a second feature (the recent
    volatility, ``pipeline.model.predictor``) and the head two outputs.
    Every initializer gets its own seed derived from ``seed``, so the initial
    weights never depend on Python's global random state, which other threads
    of the process (Prefect's, for one) may draw from. Call ``seed_everything``
    before the first network of a training.
    """
    keras = import_keras()
    init = keras.initializers
    distributional = is_distributional(loss)
    model = keras.Sequential(
        [
            keras.Input(shape=(window, 2 if distributional else 1)),
            keras.layers.LSTM(
                units,
                kernel_initializer=init.GlorotUniform(seed=seed),
                recurrent_initializer=init.Orthogonal(seed=seed + 1),
            ),
            keras.layers.Dense(
                2 if distributional else 1, kernel_initializer=init.GlorotUniform(seed=seed + 2)
            ),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss=laplace_loss() if distributional else loss,
    )
    return model


def epoch_logger(total: int, label: str) -> Any:
    """A Keras callback that logs each epoch's losses and duration (the progress of training)."""
    keras = import_keras()

    class _EpochLogger(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self._started = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs = logs or {}
            losses = ", ".join(f"{name} {value:.6f}" for name, value in sorted(logs.items()))
            logger.info(
                "%s epoch %d/%d: %s (%.1f s)",
                label,
                epoch + 1,
                total,
                losses,
                time.perf_counter() - self._started,
            )

    return _EpochLogger()


def early_stopping(patience: int) -> Any:
    """Stop when the validation loss has not improved for ``patience`` epochs; keep the best."""
    keras = import_keras()
    return keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=patience, restore_best_weights=True
    )


def as_inputs(x: np.ndarray) -> np.ndarray:
    """Windows ``(n, window)`` as the network's input ``(n, window, 1)`` in float32;
    inputs that already have a feature axis ``(n, window, features)`` as they are."""
    array = np.asarray(x, dtype=np.float32)
    return array[..., np.newaxis] if array.ndim == 2 else array


def resident_memory_mb() -> float | None:
    """This process's resident memory (``VmRSS``) in MiB, or ``None`` off Linux."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _start_worker(records: Any, level: int) -> None:
    """In a new worker: end with the parent, even when it is killed (``kill -9`` left
    workers training for nobody), and send log records of ``level`` and above to it."""
    die_with_parent()
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(records)]
    root.setLevel(level)


def _warm_up() -> int:
    """In a worker started ahead of its jobs: import what a fit needs (TensorFlow, Keras
    and the fitting module), so the first job starts at once. Returns the process id."""
    import pipeline.model.fit  # noqa: F401  (what ``fit_network`` jobs import)

    import_keras()
    return os.getpid()


def _forward(records: Any) -> None:
    """Log the workers' records in this process, as if they had been logged here."""
    while True:
        try:
            record = records.get_nowait()
        except queue.Empty:
            return
        target = logging.getLogger(record.name)
        if target.isEnabledFor(record.levelno):
            target.handle(record)


class Workers:
    """Worker processes for TensorFlow work: ``run(function, jobs)`` calls
    ``function(job)`` for every job in them and returns the outcomes in the jobs' order.

    Workers are started with ``spawn`` (a fresh interpreter: nothing of this
    process's TensorFlow state is inherited) and replaced after
    ``jobs_per_worker`` jobs each (on average, with several workers), so the
    memory TensorFlow keeps of every network goes back to the system. Their
    log records are logged here, in the thread that called ``run``, as they
    arrive. ``workers=0`` runs the jobs in this process, one after the other
    (no isolation), as does a daemonic process (one that cannot have
    children). Processes start when needed, or ahead of the first job with
    ``start`` (they import TensorFlow while the caller does something else), and stop
    at ``close`` (or the end of a ``with`` block); ``run`` may be called several
    times in between. ``discard`` stops them without waiting for what they are
    doing (processes started ahead and not needed after all); a ``with`` block left
    by an exception discards them too.

    Because of ``spawn``, a script that trains must guard its entry point with
    ``if __name__ == "__main__":`` (the workers import the main module).

    Args:
        workers: processes at a time; 0 runs in this process.
        jobs_per_worker: jobs a worker runs before it is replaced.
    """

    def __init__(self, workers: int, jobs_per_worker: int) -> None:
        if workers < 0 or jobs_per_worker < 1:
            raise ValueError(
                f"workers must be 0 or more and jobs_per_worker 1 or more, "
                f"got {workers} and {jobs_per_worker}"
            )
        if workers and multiprocessing.current_process().daemon:
            logger.info(
                "this is a daemonic process (a Dask or multiprocessing worker), which cannot "
                "start processes: running the jobs in it"
            )
            workers = 0
        self.workers = workers
        self.jobs_per_worker = jobs_per_worker
        self._pool: futures.ProcessPoolExecutor | None = None
        self._records: Any = None
        self._left = 0  # jobs the current processes may still take

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()

    def start(self) -> None:
        """Start the worker processes now and have each import TensorFlow (about 7 s
        on two cores), so that a ``run`` called after other work finds them ready.
        Nothing happens with ``workers=0`` or when they are already running; a worker's
        start counts against none of its ``jobs_per_worker``."""
        if self.workers == 0 or self._pool is not None:
            return
        pool = self._open()
        for _ in range(self.workers):
            pool.submit(_warm_up)
        logger.debug("started %d worker process(es) ahead of their jobs", self.workers)

    @property
    def processes(self) -> list[int]:
        """The ids of the worker processes running now (for tests and logs)."""
        if self._pool is None:
            return []
        return sorted((getattr(self._pool, "_processes", None) or {}).keys())

    def _open(self) -> futures.ProcessPoolExecutor:
        # Replacing workers by hand: ``max_tasks_per_child`` deadlocks when jobs are
        # queued (CPython gh-115634, Python 3.11 to 3.14).
        if self._pool is not None and self._left == 0:
            self.close()
        if self._pool is None:
            context = multiprocessing.get_context("spawn")
            self._records = context.Queue()
            level = logging.getLogger("pipeline").getEffectiveLevel()
            self._pool = futures.ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=context,
                initializer=_start_worker,
                initargs=(self._records, level),
            )
            self._left = self.workers * self.jobs_per_worker
        return self._pool

    def run(
        self,
        function: Callable[[Job], Outcome],
        jobs: Sequence[Job],
        on_done: Callable[[Job, Outcome], None] | None = None,
    ) -> list[Outcome]:
        """``function(job)`` for every job; ``on_done(job, outcome)`` here as each completes.

        Args:
            function: a module-level function (workers import it by name).
            jobs: its arguments, picklable.
            on_done: called in this process with each job and its outcome.

        Raises:
            The exception of the first job seen to fail; the jobs not yet
            started are cancelled.
        """
        outcomes: list[Outcome] = []
        if self.workers == 0:
            for job in jobs:
                outcomes.append(function(job))
                if on_done is not None:
                    on_done(job, outcomes[-1])
            return outcomes
        while len(outcomes) < len(jobs):
            pool = self._open()
            batch = jobs[len(outcomes) : len(outcomes) + self._left]
            self._left -= len(batch)
            outcomes.extend(self._run_batch(pool, function, batch, on_done))
        return outcomes

    def _run_batch(
        self,
        pool: futures.ProcessPoolExecutor,
        function: Callable[[Job], Outcome],
        jobs: Sequence[Job],
        on_done: Callable[[Job, Outcome], None] | None,
    ) -> list[Outcome]:
        submitted = [pool.submit(function, job) for job in jobs]
        position = {future: index for index, future in enumerate(submitted)}
        pending, failed = set(submitted), None
        while pending and failed is None:
            done, pending = futures.wait(pending, timeout=0.2, return_when=futures.FIRST_COMPLETED)
            _forward(self._records)
            for future in sorted(done, key=position.__getitem__):
                if future.exception() is not None:
                    failed = failed or future
                elif on_done is not None:
                    on_done(jobs[position[future]], future.result())
        if failed is not None:
            self.close()  # cancels the jobs not started
            failed.result()  # raises the job's exception
        return [future.result() for future in submitted]

    def close(self) -> None:
        """Stop the worker processes (after the jobs they are running)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._closed()

    def discard(self, timeout: float = 10.0) -> None:
        """Stop the worker processes now, without waiting for the jobs they are running
        (a worker started ahead and still importing TensorFlow, when nothing is left to
        fit): each is terminated, then killed if it has not ended within ``timeout``
        seconds; this returns once all have ended. (What Python 3.14's
        ``ProcessPoolExecutor.terminate_workers`` does, on the versions before it.)"""
        if self._pool is None:
            return
        pool = self._pool
        processes = list((getattr(pool, "_processes", None) or {}).values())
        manager = getattr(pool, "_executor_manager_thread", None)
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + timeout
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
        if manager is not None:  # the pool's own thread ends once it sees them gone
            manager.join(timeout)
        self._closed()

    def _closed(self) -> None:
        _forward(self._records)
        self._records.close()
        self._records.join_thread()
        self._pool = None
        self._left = 0
