"""The FLOPs of a piece of torch code, and the speed this machine reaches on the same matmul and convolution calls.

- count(fn): runs fn once under torch.utils.flop_counter.FlopCounterMode, which counts the ops it has a formula
  for: mm, addmm, bmm, baddbmm (2 m n k each, the bias add left out) and convolution and its backward
  (2 x output elements x C_in x kernel size; the backward counts the input's and the weights' gradients that
  autograd asks for). Backward passes (and the double backward of a Hessian-vector product) run through the
  same ops and are counted the same way. Nothing else is: elementwise ops, reductions, softmax, the
  optimizer's step, copies. Beside the count, a recorder notes every counted call: the op, and the shapes,
  strides and dtypes of its tensors with its other arguments as they were.
- replay(calls): a function that makes those calls again, in their order, on random tensors of the recorded
  shapes and strides (made once, beforehand), the aten ops themselves: torch.ops.aten.mm, addmm, bmm, baddbmm,
  convolution, convolution_backward, ... Timed, its FLOPs over its time is what this machine reaches on that
  mix of shapes, on this thread count: a measured limit for the code's own shapes, not a vendor's peak.
- seconds_per_call(fn, prepare): the median wall time of fn, after a warm-up call.
"""

import dataclasses
import statistics
import time
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map
from torch.utils.flop_counter import FlopCounterMode, flop_registry


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """What a replay needs of a tensor argument: its shape, strides (a transposed view, channels-last, an
    expanded one) and dtype."""

    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: torch.dtype

    @classmethod
    def of(cls, x):
        return cls(tuple(x.shape), tuple(x.stride()), x.dtype) if isinstance(x, torch.Tensor) else x

    def make(self) -> torch.Tensor:
        """Random values with these shape, strides and dtype, over as much storage as the strides reach."""
        size = 1 + sum((n - 1) * s for n, s in zip(self.shape, self.stride)) if all(self.shape) else 0
        return torch.randn(size).to(self.dtype).as_strided(self.shape, self.stride)


@dataclasses.dataclass(frozen=True)
class Call:
    op: torch._ops.OpOverload
    args: tuple  # tensors as TensorSpec, the rest as passed
    kwargs: dict

    def shapes(self) -> tuple:
        """The op's name and the shapes of its tensor arguments (None where the op got None)."""
        return str(self.op.overloadpacket), tuple(
            a.shape if isinstance(a, TensorSpec) else None for a in self.args if isinstance(a, TensorSpec) or a is None)


class Recorder(TorchDispatchMode):
    """Notes every call of an op that FlopCounterMode has a FLOP formula for."""

    def __init__(self):
        super().__init__()
        self.calls: list[Call] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "overloadpacket", None) in flop_registry:
            self.calls.append(Call(func, *tree_map(TensorSpec.of, (tuple(args), kwargs))))
        return func(*args, **kwargs)


def count(fn) -> tuple[int, dict[str, int], list[Call]]:
    """Run fn() once; return its FLOPs (FlopCounterMode's total), the FLOPs of each op, and its counted calls."""
    recorder, counter = Recorder(), FlopCounterMode(display=False)
    # The recorder outside: FlopCounterMode, inside, sees each op first (and may decompose it into counted
    # ones); the recorder then sees exactly the calls that it counts.
    with recorder, counter:
        fn()
    by_op = {str(op): flops for op, flops in counter.get_flop_counts().get("Global", {}).items()}
    return counter.get_total_flops(), by_op, recorder.calls


def shape_counts(calls: list[Call]) -> list[dict]:
    """How many times each op ran on each shape of its tensor arguments, in order of first appearance."""
    counts = Counter(call.shapes() for call in calls)
    return [{"op": op, "shapes": [shape and list(shape) for shape in shapes], "calls": n}
            for (op, shapes), n in counts.items()]


def replay(calls: list[Call]):
    """A function that makes the recorded calls again, in order, without autograd, on random tensors made
    here (once for each distinct call)."""
    made = {}
    prepared = []
    for call in calls:
        key = repr(call)
        if key not in made:
            made[key] = tree_map(lambda a: a.make() if isinstance(a, TensorSpec) else a, (call.args, call.kwargs))
        prepared.append((call.op, *made[key]))

    def run():
        with torch.no_grad():
            for op, args, kwargs in prepared:
                op(*args, **kwargs)

    return run


def seconds_per_call(fn, prepare=tuple, min_seconds: float = 1.0, min_calls: int = 3, warm_up: bool = True) -> float:
    """The median wall time of fn(*prepare()) over at least min_calls calls and min_seconds, after a warm-up
    call unless the caller made one; prepare's own time is not counted."""
    if warm_up:
        fn(*prepare())
    times = []
    while len(times) < min_calls or sum(times) < min_seconds:
        parts = prepare()
        start = time.perf_counter()
        fn(*parts)
        times.append(time.perf_counter() - start)
    return statistics.median(times)
