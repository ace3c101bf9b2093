"""Training steps replayed from a CUDA graph: one launch per step instead of hundreds.

A small student's step on a GPU is bound by the host launching kernels, not by the GPU running them.
On one H200 (``benchmarks/results/gpu_step-nvidia-h200.md``) the fashion-mnist preset's stage-1 step took
9.1 ms eager and 1.75 ms replayed from one graph, stage 2 21.0 and 4.0 ms, the teacher's 4.7 and 2.2 ms;
bf16 autocast and ``torch.compile`` were slower than eager float32 there. The option is ``cuda_graph`` in a
stage's (or the teacher's) section; it does nothing on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Step = Callable[..., torch.Tensor]


class StepGraph:
    """``step(*inputs) -> loss`` (forward, backward, clipping, optimiser step) replayed from a CUDA graph.

    The first :data:`WARMUP` calls run eagerly on a side stream (capture needs warmed-up kernels and
    allocator), the next one is captured and then replayed: every call is one real training step on its
    own batch, as without the graph. Inputs are copied into the graph's static buffers; a batch of
    another shape (the epoch's last, smaller one) runs eagerly. The optimiser must be ``capturable`` and
    anything the step reads from Python (learning rate, an epoch's fixed SNR) is frozen at capture: make
    one graph per epoch.

    Args:
        step: The training step over tensors on the GPU; returns the (0-dim) detached loss.
        generators: CUDA generators the step draws from (registered with the graph, so that each replay
            draws fresh numbers from them).
    """

    WARMUP = 3

    def __init__(self, step: Step, generators: tuple[torch.Generator, ...] = ()) -> None:
        self.step, self.generators = step, generators
        self.calls, self.graph = 0, None
        self.inputs: list[torch.Tensor] = []
        self.loss: torch.Tensor | None = None

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.graph is None and self.calls < self.WARMUP:
            self.calls += 1
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                loss = self.step(*inputs)
            torch.cuda.current_stream().wait_stream(side)
            return loss
        if self.graph is None:
            self.inputs = [t.clone() for t in inputs]
            graph = torch.cuda.CUDAGraph()
            for g in self.generators:
                graph.register_generator_state(g)
            with torch.cuda.graph(graph):
                self.loss = self.step(*self.inputs)
            self.graph = graph  # captured, not run: this call's batch is replayed below
        if any(a.shape != b.shape for a, b in zip(self.inputs, inputs, strict=True)):
            return self.step(*inputs)
        for buf, t in zip(self.inputs, inputs, strict=True):
            buf.copy_(t)
        self.graph.replay()
        return self.loss.clone()  # the graph's own output is overwritten by the next replay


def use_graphs(requested: bool, device: str, world: int) -> bool:
    """Whether steps are replayed from CUDA graphs: when ``requested``, on a GPU, in one process (DDP's
    gradient hooks are not captured: eager under torchrun)."""
    return requested and torch.device(device).type == "cuda" and world == 1


def graphed(step: Step, enabled: bool, generators: tuple[torch.Generator, ...] = ()) -> Step:
    """``step`` itself, or a :class:`StepGraph` of it when ``enabled`` (see :func:`use_graphs`)."""
    return StepGraph(step, generators) if enabled else step
