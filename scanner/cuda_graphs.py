"""One engine unit's forward/backward passes replayed as a CUDA graph.

The zoo's models are so small that on a GPU a forward+backward pass is bound by kernel
launches: the CPU spends longer issuing the kernels than the GPU running them (docs/benchmarks.md,
"On a GPU"). A CUDA graph records the kernels of a unit's passes (the gather of v for each image
row, [x + v]_c, the model, log p(t | .), its gradient, and the per-(job, source) sums of hits
and gradients) once, and replays them with one launch per iteration from fixed buffers: the
arithmetic is the same kernels on the same data, so the values are the eager ones (up to the
order of the atomic additions of ``index_add_``, as between two eager runs).

A graph is only kept when it is safe to:
- the eager pass just before the capture runs with torch's synchronization debug mode set to
  "error", so a model whose forward pass reads values back to the host (a shape computed from a
  tensor, an ``.item()``) is never captured: replaying it would bake in the value seen at capture;
- the first replay is compared with the eager result of the same iteration, and a graph whose
  hits differ or whose gradient sums differ by more than ``GRADIENT_RTOL`` of their largest
  magnitude is dropped.
Whenever a capture is refused, the engine keeps running eagerly for the rest of the scan, and
the reason goes to the scan's progress lines. The engine (``engine_passes.UnitRunner``) captures
only iterations that are one unit (every active job's rows within ``--batch-images``): larger
batches are not launch-bound, and one graph per unit would keep every unit's output buffers
allocated at once.
Nothing here runs on the CPU.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from torch.cuda import _POOL_HANDLE  # what torch.cuda.graph_pool_handle() returns

GRADIENT_RTOL = 1e-4

# unit_sums(v of the unit's jobs (a, *pixel_shape)) -> (hits (a * slots,), gradient sums (a * slots, *pixel_shape))
UnitSums = Callable[[torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]


class GraphedUnit:
    """A captured unit: ``run(v_now)`` copies v into the graph's input buffer and replays."""

    def __init__(self, graph: torch.cuda.CUDAGraph, v_in: torch.Tensor,
                 outputs: tuple[torch.Tensor, torch.Tensor]):
        self._graph = graph
        self._v_in = v_in
        self._outputs = outputs

    def run(self, v_now: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The unit's (hits, gradient sums) at ``v_now``. The tensors are the graph's own output
        buffers: they hold these values until the next replay of any graph of the same pool."""
        self._v_in.copy_(v_now)
        self._graph.replay()
        return self._outputs


@contextmanager
def _host_reads_raise() -> Iterator[None]:
    """torch's synchronization debug mode set to "error" (restored afterwards); torch warns that
    the mode is a prototype each time it is set, which would only be noise on a scan's stderr."""
    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            torch.cuda.set_sync_debug_mode(previous)


def run_and_capture(unit_sums: UnitSums, v_now: torch.Tensor, pool: _POOL_HANDLE | None) -> tuple[
        tuple[torch.Tensor, torch.Tensor], GraphedUnit | None, str | None]:
    """The unit's (hits, gradient sums) at ``v_now``, computed eagerly, and the unit captured as a
    CUDA graph in memory pool ``pool``: (eager result, graph, None), or (eager result, None, why
    not) when the capture is refused. The unit must have run eagerly before on this stream (lazy
    initializations such as library handles are then done), so the eager pass doubles as the
    warm-up that torch's examples run on a side stream (a side-stream warm-up left about one
    pass's activations allocated per capture on an H200, docs/benchmarks.md)."""
    try:
        with _host_reads_raise():
            expected = unit_sums(v_now)
    except RuntimeError as exc:
        # a read back to the host (or any other error, which the plain pass will raise again)
        return unit_sums(v_now), None, _reason(exc)
    v_in = v_now.detach().clone()
    # torch.OutOfMemoryError is a RuntimeError: a graph that does not fit is refused, and the
    # scan goes on eagerly, as it would have without graphs
    try:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool):
            outputs = unit_sums(v_in)
    except (RuntimeError, TypeError, NotImplementedError) as exc:
        return expected, None, _reason(exc)
    graphed = GraphedUnit(graph, v_in, outputs)
    hits, grads = graphed.run(v_now)
    expected_hits, expected_grads = expected
    if not torch.equal(hits, expected_hits):
        return expected, None, "the replayed graph counted different hits than the eager pass"
    scale = float(expected_grads.abs().max())
    difference = float((grads - expected_grads).abs().max())
    if not difference <= GRADIENT_RTOL * scale:
        return expected, None, (f"the replayed graph's gradients differ from the eager pass's by "
                                f"{difference:.3g} (largest magnitude {scale:.3g})")
    return expected, graphed, None


def _reason(exc: BaseException) -> str:
    message = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {message}"
