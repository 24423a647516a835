"""Scans on a Dask cluster (``--scheduler``): one large model split over workers, or many models.

Dask is an optional extra (``pip install 'lred[cluster]'``): it is imported only here and only
when a cluster is asked for; without it the scan stops with one line and exit status 2.

* **One model, its putative targets split** (``ClusterEstimate``, ``scan_on_cluster``): the jobs
  of the method (one per target class for L-RED) are dealt into groups; each group is one task.
  A worker receives the model and clean-data files as bytes (scanner/cluster_files.py: no
  shared filesystem needed), runs ``prepare`` on them (its own copy of the converted module)
  and Algorithm 1 for its group's jobs (``pipeline.estimate_locally``). The driver, which has
  prepared the same scan, checks that each worker selected the same clean images of the same
  model, puts the estimates back in job order and runs onnxruntime's verification and the
  order-statistic test (Sec. 3.2) on them, as a local scan does. Each job's estimate depends on
  that job alone, so the report equals the single-process one (docs/cluster.md gives the
  measurement and its condition: the same arithmetic on the workers as on the driver).
* **Many models** (``scan_models``): one task per model, each a whole ``pipeline.scan`` on a
  worker; results are yielded as they finish.

A worker that dies mid-task loses nothing: the scheduler runs its task again on another worker
(``distributed.scheduler.allowed-failures`` times, 3 by default); after that the model, or the
split scan, ends with an error (ClusterError), never silently without a result.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import ScanConfig
from .errors import ClusterError, ConfigError, LredError
from .methods import method_named

if TYPE_CHECKING:
    from distributed import Client

    from .batch import ModelTask, Runner
    from .estimation import PatternEstimate, Progress
    from .jobs import Job
    from .lred import PassCount
    from .pipeline import ScanOutcome
    from .prepare import PreparedScan, ProgressCallback

INSTALL_HINT = "pip install 'lred[cluster]'"
WAIT_SECONDS = 1.0          # how often the driver checks --timeout while workers estimate
POLL_SECONDS = 0.05         # how often the driver looks for finished tasks


def require_distributed() -> Any:
    """The ``distributed`` module, or ClusterError (exit 2) when the extra is not installed."""
    try:
        import distributed
    except ImportError as exc:
        raise ClusterError(f"--scheduler needs Dask, which is not installed ({exc}); {INSTALL_HINT}") from exc
    return distributed


def connect(address: str, timeout_seconds: float = 30.0) -> Client:
    """A client of the scheduler at ``address`` (``tcp://host:8786``) with at least one worker."""
    distributed = require_distributed()
    try:
        client = distributed.Client(address, timeout=timeout_seconds, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ClusterError(f"cannot reach the Dask scheduler at {address} ({type(exc).__name__}: {exc}); "
                           "start one with 'dask scheduler' and workers with 'dask worker ADDRESS'") from exc
    try:
        client.wait_for_workers(1, timeout=timeout_seconds)
    except (OSError, TimeoutError) as exc:
        client.close()
        raise ClusterError(f"no worker joined the Dask scheduler at {address} within {timeout_seconds:g} s; "
                           "start one with 'dask worker ADDRESS'") from exc
    return client


def worker_threads(client: Client) -> int:
    """Threads of all workers: the number of tasks the cluster runs at once."""
    workers = client.scheduler_info(n_workers=-1).get("workers", {})
    return max(1, sum(int(w.get("nthreads", 1)) for w in workers.values()))


def split_jobs(count: int, groups: int) -> list[list[int]]:
    """Job indices dealt round-robin into ``groups`` non-empty groups (targets that converge fast
    and slow then mix in every group)."""
    groups = max(1, min(groups, count))
    return [list(range(g, count, groups)) for g in range(groups)]


def fingerprint(prepared: PreparedScan) -> str:
    """What a worker must have prepared exactly as the driver did: the model's sha256, the
    number of classes and the selected clean images (pixels and labels)."""
    digest = hashlib.sha256(f"{prepared.model.sha256}:{prepared.num_classes}:".encode())
    digest.update(prepared.x.tobytes())
    digest.update(prepared.y.tobytes())
    return digest.hexdigest()


@dataclass(frozen=True, eq=False)
class GroupResult:
    """One group's estimates, in the group's job order, and where they were made."""

    indices: list[int]
    estimates: list[PatternEstimate]
    fingerprint: str
    device: str
    passes: tuple[int, int] = (0, 0)       # (forward+backward, forward-only) image rows on the worker


def estimate_group(model: Any, data: Any, config: ScanConfig, indices: list[int]) -> GroupResult | LredError:
    """The task of one group (runs on a worker): prepare the scan from the shipped files and run
    Algorithm 1 for the jobs ``indices``. An LredError is returned, not raised: it is the same on
    every worker, so the scheduler must not retry it."""
    from .deadline import Deadline
    from .lred import PassCount
    from .methods import method_named
    from .pipeline import estimate_locally
    from .prepare import prepare

    deadline = Deadline(config.timeout)     # the worker's own bound: Dask cannot stop a running task

    def progress(iteration: int, finished: int, total: int) -> None:
        deadline.check(f"estimating patterns on a worker ({finished}/{total} done after {iteration} iterations)")

    try:
        with tempfile.TemporaryDirectory(prefix="lred-worker-") as folder:
            prepared = prepare(model.materialize(Path(folder, "model")), data.materialize(Path(folder, "data")),
                               config, deadline=deadline)
            jobs = method_named(config.method).jobs(prepared.num_classes)
            counts = PassCount()
            estimates = estimate_locally(prepared, config, [jobs[i] for i in indices], progress, counts=counts)
            return GroupResult(indices, estimates, fingerprint(prepared), str(prepared.device),
                               (counts.image_passes, counts.forward_images))
    except LredError as exc:
        return _with_origins(exc, folder, model, data)


def _with_origins(exc: LredError, folder: str, model: Any, data: Any) -> LredError:
    """``exc`` with the worker's temporary paths replaced by the driver's (same error type)."""
    message = str(exc)
    for shipped in (model, data):
        message = message.replace(str(Path(folder, "model" if shipped is model else "data", shipped.entry)),
                                  shipped.origin)
    return type(exc)(message)


class ClusterEstimate:
    """``pipeline.Estimate`` over a Dask cluster: the jobs split into ``groups`` tasks (None: one
    per worker thread), each estimated by a worker; ``say`` hears each group that finishes."""

    def __init__(self, client: Client, model_path: str | os.PathLike, data_path: str | os.PathLike,
                 groups: int | None = None, say: ProgressCallback | None = None):
        self.client, self.model_path, self.data_path = client, model_path, data_path
        self.groups, self.say = groups, say or (lambda stage, message: None)

    def __call__(self, prepared: PreparedScan, config: ScanConfig, jobs: Sequence[Job], progress: Progress,
                 notice: Callable[[str], None], counts: PassCount | None = None) -> list[PatternEstimate]:
        from .cluster_files import data_files, model_files

        distributed = require_distributed()
        split = split_jobs(len(jobs), self.groups or worker_threads(self.client))
        # the files travel inside each task: the scheduler holds them until the task is done, so a
        # rerun after a worker's death has them too (scattered copies die with their workers, and a
        # broadcast made while a worker restarts reaches only the others: seen losing a group)
        model, data = model_files(self.model_path), data_files(self.data_path)
        futures = {self.client.submit(estimate_group, model, data, config, indices, pure=False, retries=1): indices
                   for indices in split}
        self.say("estimate", f"{len(jobs)} estimations in {len(split)} groups on the Dask cluster "
                             f"({len(self.client.scheduler_info(n_workers=-1).get('workers', {}))} workers)")
        expected = fingerprint(prepared)
        estimates: dict[int, PatternEstimate] = {}
        try:
            pending = set(futures)
            while pending:
                done = _wait(pending)
                pending -= done
                for future in done:
                    result = _result(future, futures[future], distributed)
                    if result.fingerprint != expected:
                        raise ClusterError(
                            "a Dask worker prepared another scan than the driver (other clean images or model "
                            "bytes: are lred, onnx and numpy the same versions there?); refusing to merge")
                    estimates.update(zip(result.indices, result.estimates))
                    if counts is not None:
                        counts.add(*result.passes)
                    self.say("estimate", f"group of {len(result.indices)} estimations done ({result.device}); "
                                         f"{len(estimates)}/{len(jobs)} in all")
                progress(max((e.iterations for e in estimates.values()), default=0), len(estimates), len(jobs))
        finally:
            _cancel(self.client, [f for f in futures if not f.done()])
        missing = [jobs[i].target for i in range(len(jobs)) if i not in estimates]
        if missing:      # cannot happen with every group returned; never merge an incomplete set
            raise ClusterError(f"the cluster returned no estimate for classes {missing[:5]}")
        return [estimates[i] for i in range(len(jobs))]


def _wait(pending: set) -> set:
    """The futures of ``pending`` that are done within WAIT_SECONDS (maybe none). Polled: Dask's
    ``wait`` and ``as_completed`` look for a default client, which a library caller's may not be."""
    end = time.monotonic() + WAIT_SECONDS
    while True:
        done = {future for future in pending if future.done()}
        if done or time.monotonic() >= end:
            return done
        time.sleep(POLL_SECONDS)


def _result(future: Any, indices: list[int], distributed: Any) -> GroupResult:
    """The group's result; its LredError re-raised; a lost task as ClusterError."""
    try:
        result = future.result()
    except distributed.KilledWorker as exc:
        raise ClusterError(f"Dask workers died while estimating {len(indices)} classes, and the scheduler "
                           f"gave up after retrying ({exc}); out of memory on the workers?") from exc
    except (distributed.client.FutureCancelledError, OSError) as exc:
        raise ClusterError(f"the Dask cluster lost the estimation of {len(indices)} classes "
                           f"({type(exc).__name__}: {exc})") from exc
    except (ImportError, RuntimeError) as exc:
        if not _environment_error(exc):
            raise
        raise _environment_problem(exc) from exc
    if isinstance(result, LredError):
        raise result
    return result


def scan_on_cluster(address: str, model_path: str | os.PathLike, data_path: str | os.PathLike,
                    config: ScanConfig, on_progress: ProgressCallback | None = None,
                    groups: int | None = None, class_names: Sequence[str] = ()) -> ScanOutcome:
    """``lred scan --scheduler ADDRESS``: one model, its pattern estimations split over the
    cluster's workers; the report is the one ``pipeline.scan`` gives (module docstring). Additive
    methods only: the patch engine (``--trigger patch|both``) runs in one process."""
    if method_named(config.method).engine == "patch" or config.trigger == "both":
        raise ConfigError("--scheduler splits the additive pattern estimations (lred, ured, pred); "
                          "scan with --trigger patch or both without it")
    client = connect(address)               # before torch loads: a missing extra or scheduler fails fast
    from .pipeline import scan

    try:
        return scan(model_path, data_path, config, on_progress, class_names=class_names,
                    estimate=ClusterEstimate(client, model_path, data_path, groups, on_progress))
    finally:
        client.close()


def scan_model(model: Any, data: Any, config: ScanConfig,
               class_names: Sequence[str] = ()) -> ScanOutcome | LredError:
    """The task of one model (runs on a worker): a whole scan of the shipped files, reported with
    the driver's paths. An LredError is returned, not raised (it would be the same on a retry)."""
    from .pipeline import scan

    try:
        with tempfile.TemporaryDirectory(prefix="lred-worker-") as folder:
            outcome = scan(model.materialize(Path(folder, "model")), data.materialize(Path(folder, "data")),
                           config, class_names=class_names)
    except LredError as exc:
        return _with_origins(exc, folder, model, data)
    report = replace(outcome.report, model=replace(outcome.report.model, path=model.origin),
                     data=replace(outcome.report.data, source=data.origin))
    return replace(outcome, report=report)


def scan_models(client: Client, model_paths: Iterable[str | os.PathLike], data_path: str | os.PathLike,
                config: ScanConfig, retries: int = 1, in_flight: int | None = None
                ) -> Iterator[tuple[Path, ScanOutcome | Exception]]:
    """Scan every model on the cluster, one task each; yield (path, outcome or error) as each
    finishes, exactly once per path. An error is an LredError of the scan (as ``lred scan``
    would report it) or, for a task the cluster lost, a ClusterError. ``retries``: reruns of a
    task that raised something else (a worker's disk, say); a worker's death is rerun by the
    scheduler. At most ``in_flight`` models (None: twice the worker threads) are on the cluster
    at once, so memory holds a few models, not all; the clean data travels with each task."""
    from .cluster_files import data_files

    data = data_files(data_path)      # read once, before any task (a bad data set stops here)
    tasks = ((Path(p), Path(p), lambda: data, config, ()) for p in model_paths)
    yield from _scan_tasks(client, tasks, retries, in_flight)


def cluster_runner(client: Client, retries: int = 1) -> Runner:
    """``lred scan MODELS... --out DIR --scheduler ADDRESS``: the batch's runner (``batch.scan_many``)
    that scans each pending model as one task on the cluster, each with its own clean data,
    configuration and class names (a manifest's), and yields them as they finish; as
    ``scan_models``, at most twice the worker threads of models are on the cluster at once and a
    task the cluster lost for good comes back as a ClusterError."""
    def run(pending: Sequence[tuple[int, ModelTask]]) -> Iterator[tuple[int, ModelTask, ScanOutcome | Exception]]:
        from .cluster_files import data_files

        read: dict[Path | None, Any] = {}          # each clean data set, read once

        def data_of(task: ModelTask) -> Callable[[], Any]:
            def load() -> Any:
                if task.data not in read:
                    read[task.data] = data_files(task.data or "")
                return read[task.data]
            return load

        tasks = (((index, task), task.model, data_of(task), task.config, tuple(task.class_names or ()))
                 for index, task in pending)
        for (index, task), outcome in _scan_tasks(client, tasks, retries, None):
            yield index, task, outcome
    return run


def _scan_tasks(client: Client, tasks: Iterable[tuple[Any, Path, Callable[[], Any], ScanConfig, tuple[str, ...]]],
                retries: int, in_flight: int | None) -> Iterator[tuple[Any, ScanOutcome | Exception]]:
    """The loop of ``scan_models`` and ``cluster_runner``: each (key, model, data loader, config,
    class names) one ``scan_model`` task, at most ``in_flight`` (None: twice the worker threads) on
    the cluster at once; yield (key, outcome or error) as each finishes. A model or data set that
    cannot be read is yielded as its LredError without a task. The files travel inside each task:
    the scheduler holds them until the task is done, so a rerun after a worker's death has them
    too (see ClusterEstimate)."""
    from .cluster_files import model_files

    distributed = require_distributed()
    limit = in_flight or 2 * worker_threads(client)
    queue = iter(tasks)
    running: dict[Any, Any] = {}
    try:
        while True:
            while len(running) < limit:
                item = next(queue, None)
                if item is None:
                    break
                key, path, load_data, config, class_names = item
                try:
                    data, model = load_data(), model_files(path)
                except LredError as exc:
                    yield key, exc
                    continue
                future = client.submit(scan_model, model, data, config, class_names, pure=False, retries=retries)
                running[future] = key
            if not running:
                return
            for future in _wait(set(running)):
                key = running.pop(future)
                yield key, _outcome(future, distributed)
                future.release()
    finally:
        _cancel(client, list(running))


def _cancel(client: Client, futures: list) -> None:
    """Cancel what is still on the cluster (a running task finishes there; its result is dropped)."""
    if futures and client.status == "running":
        client.cancel(futures)


def _outcome(future: Any, distributed: Any) -> ScanOutcome | Exception:
    try:
        return future.result()          # an outcome, or the scan's LredError (returned by scan_model)
    except distributed.KilledWorker as exc:
        return ClusterError(f"Dask workers died scanning this model and the scheduler gave up after "
                            f"retrying ({exc}); out of memory on the workers?")
    except Exception as exc:            # after its retries: recorded for this model, the others go on
        return _environment_problem(exc) if _environment_error(exc) else exc


def _environment_error(exc: BaseException) -> bool:
    """Whether the scheduler or a worker could not load lred's task (another environment)."""
    return isinstance(exc, ImportError) or (isinstance(exc, RuntimeError) and "deserializ" in str(exc))


def _environment_problem(exc: BaseException) -> ClusterError:
    first = str(exc).splitlines()[0] if str(exc) else ""
    return ClusterError(f"the Dask scheduler or a worker cannot load lred's task ({type(exc).__name__}: {first}); "
                        "install the same lred, torch and onnx versions on the scheduler and every worker")
