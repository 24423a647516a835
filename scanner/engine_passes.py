"""The forward/backward passes of one engine iteration: how the active jobs' image rows are laid
out in units, what one unit's passes compute, and when they are replayed as a CUDA graph.

A unit is a set of jobs whose passes hold every image row of those jobs, so the jobs can take
their step (``engine.py``) once the unit is done. A unit is one pass, except for a job with more
rows than ``batch_images``, which gets a unit of its own, split into passes: memory per unit is
therefore bounded by the chunk.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

import torch

from .clipping import clip_pixels
from .cuda_graphs import GraphedUnit, UnitSums, run_and_capture
from .estimation import DifferentiableClassifier, PairBatch
from .weights import Job

# (image rows, each row's position among the unit's jobs, its target, the (position, source
# slot) key its hit and gradient are summed under)
Pass = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Unit:
    """Jobs ``members``, their ``index`` into the engine's stacked state (a slice for a run of
    consecutive jobs: a view, no gather or scatter), their ``passes``, and ``source_of_slot``
    (a, slots): the source class of each job's slots (K for padding)."""

    members: list[int]
    index: torch.Tensor | slice
    passes: list[Pass]
    source_of_slot: torch.Tensor

    @cached_property
    def image_rows(self) -> int:
        """Image rows through forward+backward in one iteration of this unit (the report's image passes)."""
        return sum(int(rows.numel()) for rows, *_ in self.passes)


def lay_out(active: Sequence[int], jobs: Sequence[Job], batch: PairBatch, targets: torch.Tensor,
            labels: torch.Tensor, num_classes: int, device: torch.device) -> list[Unit]:
    """The units of one iteration over the jobs ``active``; ``targets`` (jobs,) and ``labels``
    (M,) on ``device``."""
    units: list[tuple[list[int], list[list[tuple[int, torch.Tensor]]]]] = []
    for group in batch.chunks(active):
        members = list(dict.fromkeys(i for i, _ in group))
        if len(members) == 1 and units and units[-1][0] == members and len(group) == 1 \
                and batch.rows[members[0]].numel() > batch.batch_images:
            units[-1][1].append(group)             # the next piece of a split job
        else:
            units.append((members, [group]))
    return [_unit(members, groups, jobs, targets, labels, num_classes, device) for members, groups in units]


def _unit(members: list[int], groups: list[list[tuple[int, torch.Tensor]]], jobs: Sequence[Job],
          targets: torch.Tensor, labels: torch.Tensor, K: int, device: torch.device) -> Unit:
    position = {i: p for p, i in enumerate(members)}
    # sums are kept per (job, source slot), not per (job, class): a P-RED job has one
    # source, so this keeps the unit's gradient sums as small as its image rows
    slots = max(len(jobs[i].sources) for i in members)
    source_of_slot = torch.full((len(members), slots), K, dtype=torch.long)   # K: padding
    slot_of_class = torch.zeros((len(members), K), dtype=torch.long)
    for p, i in enumerate(members):
        source_of_slot[p, :len(jobs[i].sources)] = torch.as_tensor(jobs[i].sources)
        slot_of_class[p, list(jobs[i].sources)] = torch.arange(len(jobs[i].sources))
    source_of_slot, slot_of_class = source_of_slot.to(device), slot_of_class.to(device)
    index = slice(members[0], members[-1] + 1) if members == list(range(members[0], members[-1] + 1)) \
        else torch.as_tensor(members, device=device)
    passes = []
    for group in groups:
        rows_image = torch.cat([idx for _, idx in group])
        rows_position = torch.cat([torch.full((idx.numel(),), position[i], device=device,
                                              dtype=torch.long) for i, idx in group])
        passes.append((rows_image, rows_position, targets[index][rows_position],
                       rows_position * slots + slot_of_class[rows_position, labels[rows_image]]))
    return Unit(members, index, passes, source_of_slot)


def unit_sums(classifier: DifferentiableClassifier, pixels: torch.Tensor, unit: Unit) -> UnitSums:
    """The unit's forward/backward passes as one function of v of its jobs: the hits (Q_t's
    numerators) and gradient sums of log p(t | [x + v]_c) per (job, source slot). ``pixels``
    (M, *pixel_shape) the clean images on the classifier's device."""
    a, slots = unit.source_of_slot.shape
    device, dtype, pixel_shape = pixels.device, pixels.dtype, tuple(pixels.shape[1:])

    def sums(v_now: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hits = torch.zeros(a * slots, device=device, dtype=dtype)
        grads = torch.zeros((a * slots,) + pixel_shape, device=device, dtype=dtype)
        for rows_image, rows_position, target_of_row, pair_key in unit.passes:
            u = v_now[rows_position].requires_grad_(True)
            with torch.enable_grad():
                scores = classifier.scores(clip_pixels(pixels[rows_image] + u))      # eq. (1)
                log_p = classifier.log_posterior(scores).gather(1, target_of_row[:, None]).sum()
                (row_grads,) = torch.autograd.grad(log_p, u)
            hits.index_add_(0, pair_key, (scores.detach().argmax(dim=1) == target_of_row).to(dtype))
            grads.index_add_(0, pair_key, row_grads)
        return hits, grads
    return sums


class UnitRunner:
    """Runs the units' passes, eagerly or replayed as a CUDA graph.

    On a GPU, when every active job's rows fit in one unit (the batch is small, so kernel
    launches cost more than the kernels), the unit is captured as a CUDA graph on its second
    iteration with the same layout and replayed from then on (scanner/cuda_graphs.py); the
    graph is dropped when the layout changes. Layouts of several units run eagerly: their
    passes are large enough for launches not to matter, and each unit's graph would keep its
    own output buffers allocated, so memory would grow with the number of units.
    """

    def __init__(self, use_graphs: bool, notice: Callable[[str], None] | None = None):
        self.use_graphs = use_graphs
        self.notice = notice
        self.graph: GraphedUnit | None = None      # the current layout's one unit, once captured
        self.layout_iterations = 0                 # iterations run with the current layout
        self.pool = torch.cuda.graph_pool_handle() if use_graphs else None

    def start_iteration(self) -> None:
        self.layout_iterations += 1

    def new_layout(self) -> None:
        """The active jobs changed: drop the graph and count iterations afresh."""
        self.graph = None
        self.layout_iterations = 0
        if self.use_graphs:
            self.pool = torch.cuda.graph_pool_handle()

    def run(self, sums: UnitSums, v_now: torch.Tensor, units_in_layout: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(hits, gradient sums) of one unit at ``v_now``."""
        if self.graph is not None:
            return self.graph.run(v_now)
        if self.use_graphs and self.layout_iterations == 2 and units_in_layout == 1:
            result, self.graph, refusal = run_and_capture(sums, v_now, self.pool)
            if self.graph is None:
                self.use_graphs = False
                if self.notice is not None:
                    self.notice(f"CUDA graphs off for this scan, passes run eagerly ({refusal})")
            return result
        return sums(v_now)
