"""Turn a fixed-batch ONNX detector into one that takes any batch size, and prove it still answers the same.

Exporters often bake the batch of 1 they were traced with into the graph. Marking the input's batch
axis symbolic is not enough: a ``Reshape`` whose constant target starts with that 1 either fails for a
batch of N (NanoDet's channel shuffle, target ``[1, 2, 58, 40, 40]``) or, worse, silently folds the N
frames into another axis (YOLOX's head, target ``[1, 85, -1]``, mixes the frames' anchors together).

Strategy, in two independent halves:

1. **Proof by analysis** (:func:`rewrite_batch`). Starting from the image input (batch on axis 0), we
   follow the batch axis through every node, with the op's semantics, and refuse anything we cannot
   prove keeps the frames apart (an unknown operator, a ``Concat`` with a batch-1 constant, a shape
   computed at run time...). Each ``Reshape`` of a batched tensor must keep the batch on axis 0 with a
   leading target of 1 (or already 0 / -1); its leading 1 becomes 0, which ONNX Reshape reads as "copy
   this dimension from the input" (``allowzero=0``, the default). As the batch is on the input's axis 0
   the copied dimension is exactly the batch, whatever N is, and the rest of the target (other zeros
   copy non-batch axes, -1 still resolves per frame) is untouched. No ``Shape``/``Concat`` nodes are
   added, so the rewritten graph is as fast as the original.
2. **Proof by measurement** (:func:`verify_batch`). A batch of N distinct frames through the prepared
   model must match N single runs of the original within ``atol``: this catches anything the analysis
   got wrong, and is what the user is told.

Pure of Ray; onnxruntime is only imported by the verification.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import helper, numpy_helper

BATCH_DIM = "batch"
"""Name of the symbolic batch dimension written on the prepared model's input and outputs."""

# Slice ends at or beyond this are "to the end" (exporters write INT64_MAX or INT32_MAX).
_SLICE_TO_END = 2**31 - 1

ModelSource = str | os.PathLike[str] | onnx.ModelProto


class PrepareError(Exception):
    """The model cannot be made batch-dynamic; the message is one line saying why."""


@dataclass(frozen=True, slots=True)
class PrepareReport:
    """What :func:`prepare_model` did, for the CLI to print."""

    input_name: str
    batch: int
    rewritten_reshapes: int
    max_abs_diff: float
    already_dynamic: bool


@dataclass(frozen=True, slots=True)
class BatchRewrite:
    """A rewritten model and how many Reshape nodes had their target changed."""

    model: onnx.ModelProto
    rewritten_reshapes: int


# ---------------------------------------------------------------------------------------------------
# Input discovery
# ---------------------------------------------------------------------------------------------------


def image_input(graph: onnx.GraphProto) -> onnx.ValueInfoProto:
    """The one real input of the graph.

    Old exporters (NanoDet's) also list every initializer as a graph input, so the image is the
    input that is not an initializer.
    """
    initialised = {t.name for t in graph.initializer}
    real = [v for v in graph.input if v.name not in initialised]
    if len(real) != 1:
        names = ", ".join(repr(v.name) for v in real) or "none"
        raise PrepareError(f"expected exactly one image input, found {len(real)} ({names})")
    return real[0]


def _dims(value: onnx.ValueInfoProto) -> list[int | str | None]:
    """Static sizes as ints, symbolic ones as their name, unknown ones as None."""
    out: list[int | str | None] = []
    for d in value.type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            out.append(d.dim_value)
        elif d.HasField("dim_param"):
            out.append(d.dim_param)
        else:
            out.append(None)
    return out


def has_dynamic_batch(model: onnx.ModelProto) -> bool:
    """Whether the image input's batch axis is already symbolic; refuses inputs that are not [1, C, H, W].

    The batch axis must be a leading axis of 1 on a rank-4 image tensor: anything else is not an
    image detector export this tool knows how to reason about.
    """
    value = image_input(model.graph)
    if not value.type.HasField("tensor_type") or not value.type.tensor_type.HasField("shape"):
        raise PrepareError(f"input {value.name!r} has no declared shape: expected [1, C, H, W]")
    dims = _dims(value)
    if len(dims) != 4:
        raise PrepareError(f"input {value.name!r} has shape {dims}: expected an image batch [1, C, H, W]")
    if not isinstance(dims[0], int):
        return True
    if dims[0] != 1:
        raise PrepareError(f"input {value.name!r} has a fixed batch of {dims[0]}: expected [1, C, H, W]")
    return False


# ---------------------------------------------------------------------------------------------------
# Batch-axis analysis
# ---------------------------------------------------------------------------------------------------

# Ops that work element by element, with multidirectional (numpy) broadcasting between their inputs.
_ELEMENTWISE = frozenset(
    {
        "Abs", "Acos", "Acosh", "Add", "And", "Asin", "Asinh", "Atan", "Atanh", "BitShift", "Cast", "Ceil",
        "Celu", "Clip", "Cos", "Cosh", "Div", "Dropout", "Elu", "Equal", "Erf", "Exp", "Floor", "Gelu",
        "Greater", "GreaterOrEqual", "HardSigmoid", "HardSwish", "Identity", "IsInf", "IsNaN", "LeakyRelu",
        "Less", "LessOrEqual", "Log", "Max", "Mean", "Min", "Mish", "Mod", "Mul", "Neg", "Not", "Or",
        "PRelu", "Pow", "Reciprocal", "Relu", "Round", "Selu", "Sigmoid", "Sign", "Sin", "Sinh", "Softplus",
        "Softsign", "Sqrt", "Sub", "Sum", "Tan", "Tanh", "ThresholdedRelu", "Where", "Xor"
    }
)
# Ops defined on [N, C, ...] that treat each of the N samples independently.
_PER_SAMPLE = frozenset(
    {
        "AveragePool", "BatchNormalization", "Conv", "ConvTranspose", "DepthToSpace", "GlobalAveragePool",
        "GlobalLpPool", "GlobalMaxPool", "InstanceNormalization", "LpPool", "LRN", "MaxPool", "SpaceToDepth"
    }
)
_REDUCE = frozenset(
    {
        "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin",
        "ReduceProd", "ReduceSum", "ReduceSumSquare"
    }
)


def _label(node: onnx.NodeProto, index: int) -> str:
    return f"{node.op_type} node {node.name or f'#{index}'!r}"


def _attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _subgraph_names(node: onnx.NodeProto) -> set[str]:
    """Every tensor name read inside the node's subgraphs (If/Loop/Scan bodies), recursively.

    A body may read an outer tensor without listing it as a node input; if that tensor carries the
    batch we cannot reason about the body, so it must be seen.
    """
    names: set[str] = set()
    for a in node.attribute:
        graphs = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)
        for g in graphs:
            for inner in g.node:
                names.update(inner.input)
                names |= _subgraph_names(inner)
    return names


class _BatchAnalysis:
    """Walks the graph once, in its (topological) order, tracking on which axis each tensor has the batch.

    ``axis[name]`` is the batch axis of a tensor computed from the image; tensors absent from it do not
    depend on the image at all (weights, constants, shape arithmetic on constants) and are free to keep
    their batch-1-era values. Each handler either returns the batch axis of the node's outputs or raises
    :class:`PrepareError` naming the node: refusing is always safe, a wrong guess is not.
    """

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        graph = model.graph
        self.consts: dict[str, npt.NDArray[Any]] = {
            t.name: numpy_helper.to_array(t) for t in graph.initializer
        }
        for node in graph.node:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                value = _constant_value(node)
                if value is not None:
                    self.consts[node.output[0]] = value
        # Static shapes of the batch-1 graph, from the exporter's value_info completed by ONNX inference.
        try:
            inferred = onnx.shape_inference.infer_shapes(model)
        except Exception as exc:  # onnx raises several error types from C++
            raise PrepareError(f"ONNX shape inference fails on this model: {_one_line(exc)}") from None
        g = inferred.graph
        self.shapes: dict[str, list[int | str | None]] = {}
        for v in [*g.input, *g.value_info, *g.output]:
            if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape"):
                self.shapes[v.name] = _dims(v)
        for name, value in self.consts.items():
            self.shapes[name] = list(value.shape)
        self.axis: dict[str, int] = {image_input(graph).name: 0}
        # node index -> new Reshape target, and nodes whose allowzero attribute must go.
        self.new_targets: dict[int, npt.NDArray[np.int64]] = {}
        self.drop_allowzero: set[int] = set()
        self._handlers: dict[str, Callable[[onnx.NodeProto, int, list[int | None]], int]] = {
            "Transpose": self._transpose,
            "Concat": self._concat,
            "Split": self._split,
            "Slice": self._slice,
            "Gather": self._gather,
            "Flatten": self._flatten,
            "Squeeze": self._squeeze,
            "Unsqueeze": self._unsqueeze,
            "Reshape": self._reshape,
            "Softmax": self._softmax,
            "LogSoftmax": self._softmax,
            "Hardmax": self._softmax,
            "ArgMax": self._argmax,
            "ArgMin": self._argmax,
            "MatMul": self._matmul,
            "Gemm": self._gemm,
            "Expand": self._expand,
            "Tile": self._tile,
            "Pad": self._pad,
            "Resize": self._resize,
            "Upsample": self._resize,
            "TopK": self._topk,
            "CumSum": self._cumsum,
        }

    # -- helpers -------------------------------------------------------------------------------------

    def run(self) -> None:
        for index, node in enumerate(self.model.graph.node):
            in_axes = [self.axis.get(name) if name else None for name in node.input]
            if any(self.axis.get(n) is not None for n in _subgraph_names(node)):
                raise PrepareError(f"{_label(node, index)} reads a batched tensor inside a subgraph")
            if all(a is None for a in in_axes):
                continue  # does not depend on the image: batch-free, whatever it computes
            if node.domain not in ("", "ai.onnx"):
                raise PrepareError(
                    f"{_label(node, index)} (domain {node.domain!r}) is not a standard operator: "
                    "cannot prove the batch rewrite correct"
                )
            out_axis = self._dispatch(node, index, in_axes)
            for name in node.output:
                if name:
                    self.axis[name] = out_axis

    def _dispatch(self, node: onnx.NodeProto, index: int, in_axes: list[int | None]) -> int:
        op = node.op_type
        if op in _ELEMENTWISE:
            return self._broadcast(node, index, list(node.input), in_axes)
        if op in _PER_SAMPLE:
            return self._per_sample(node, index, in_axes)
        if op in _REDUCE:
            return self._reduce(node, index, in_axes)
        if op in ("Shape", "Size"):
            raise PrepareError(
                f"{_label(node, index)} reads the size of a batched tensor: shape arithmetic that "
                "hard-codes batch 1 cannot be rewritten"
            )
        handler = self._handlers.get(op)
        if handler is None:
            raise PrepareError(
                f"{_label(node, index)}: operator {op!r} on a batched tensor is not supported, "
                "cannot prove the batch rewrite correct"
            )
        return handler(node, index, in_axes)

    def _only_input_batched(self, node: onnx.NodeProto, index: int, in_axes: list[int | None]) -> int:
        """The batch axis of input 0, refusing a batch reaching the op's parameters (sizes, weights...)."""
        if in_axes[0] is None or any(a is not None for a in in_axes[1:]):
            raise PrepareError(f"{_label(node, index)} takes a batched tensor as a parameter")
        return in_axes[0]

    def _rank(self, name: str, node: onnx.NodeProto, index: int) -> int:
        shape = self.shapes.get(name)
        if shape is None:
            raise PrepareError(f"{_label(node, index)}: the rank of {name!r} is unknown")
        return len(shape)

    def _static_shape(self, name: str, node: onnx.NodeProto, index: int) -> list[int]:
        shape = self.shapes.get(name)
        if shape is None or not all(isinstance(d, int) for d in shape):
            raise PrepareError(f"{_label(node, index)}: the shape of {name!r} is not static ({shape})")
        return [int(d) for d in shape]  # type: ignore[arg-type]

    def _const_ints(self, name: str, node: onnx.NodeProto, index: int, what: str) -> list[int]:
        value = self.consts.get(name)
        if value is None:
            raise PrepareError(
                f"{_label(node, index)} has a computed {what} (not a constant): cannot prove the batch "
                "rewrite correct"
            )
        return [int(v) for v in value.reshape(-1)]

    def _ints_attr_or_input(
        self, node: onnx.NodeProto, index: int, attr: str, input_index: int
    ) -> list[int] | None:
        """An int list given as attribute (old opsets) or as a constant input (newer ones); None if absent."""
        value = _attr(node, attr)
        if value is not None:
            return [int(v) for v in value]
        if len(node.input) > input_index and node.input[input_index]:
            return self._const_ints(node.input[input_index], node, index, attr)
        return None

    # -- generic families ----------------------------------------------------------------------------

    def _broadcast(
        self, node: onnx.NodeProto, index: int, names: Sequence[str], in_axes: list[int | None]
    ) -> int:
        """Numpy broadcasting, right-aligned: a batch-free operand needs size 1 (or no axis) at the batch."""
        present = [(n, a) for n, a in zip(names, in_axes, strict=True) if n]
        if len(present) == 1:
            return present[0][1]  # type: ignore[return-value]
        ranks = [self._rank(n, node, index) for n, _ in present]
        out_rank = max(ranks)
        positions = {out_rank - r + a for (_, a), r in zip(present, ranks, strict=True) if a is not None}
        if len(positions) != 1:
            raise PrepareError(f"{_label(node, index)} combines tensors batched on different axes")
        pos = positions.pop()
        for (name, a), r in zip(present, ranks, strict=True):
            offset = out_rank - r
            if a is None and pos >= offset:
                size = (self.shapes.get(name) or [None] * r)[pos - offset]
                if size != 1:
                    raise PrepareError(
                        f"{_label(node, index)} combines a batched tensor with {name!r} whose size on the "
                        f"batch axis is {size}, not a broadcastable 1"
                    )
        return pos

    def _per_sample(self, node: onnx.NodeProto, index: int, in_axes: list[int | None]) -> int:
        axis = self._only_input_batched(node, index, in_axes)
        if axis != 0:
            raise PrepareError(f"{_label(node, index)} expects the batch on axis 0, it is on axis {axis}")
        extra_outputs = [n for n in node.output[1:] if n]
        # MaxPool's indices are flattened over the whole tensor, batch included; BatchNormalization's
        # extra outputs are training statistics over the batch: both mix the frames.
        if node.op_type in ("MaxPool", "BatchNormalization") and extra_outputs:
            raise PrepareError(f"{_label(node, index)} has outputs computed across the batch {extra_outputs}")
        return 0

    def _reduce(self, node: onnx.NodeProto, index: int, in_axes: list[int | None]) -> int:
        axis = self._only_input_batched(node, index, in_axes)
        rank = self._rank(node.input[0], node, index)
        axes = self._ints_attr_or_input(node, index, "axes", 1)
        if not axes:
            if _attr(node, "noop_with_empty_axes", 0):
                return axis
            raise PrepareError(f"{_label(node, index)} reduces over all axes, batch included")
        axes = [a % rank for a in axes]
        if axis in axes:
            raise PrepareError(f"{_label(node, index)} reduces over the batch axis")
        return axis if _attr(node, "keepdims", 1) else axis - sum(a < axis for a in axes)

    # -- shape ops -----------------------------------------------------------------------------------

    def _transpose(self, node: onnx.NodeProto, index: int, in_axes: list[int | None]) -> int:
        axis = self._only_input_batched(node, index, in_axes)
        perm = _attr(node, "perm")
        if perm is None:
            perm = list(reversed(range(self._rank(node.input[0], node, index))))
        return list(perm).index(axis)

    def _concat(self, node: onnx.NodeProto, index: int, in_axes: list[int | None]) -> int:
        axes = set(in_axes)
        if None in axes:
            # The batch-free operand has size 1 on the batch axis, frozen at export: at batch N the
            # shapes no longer agree (an Expand would be needed, which we do not attempt).
            raise PrepareError(f"{_label(node, index)} joins a batched tensor with a fixed batch-1 tensor")
        if len(axes) != 1:
            raise PrepareError(f"{_label(node, index)} joins tensors batched on different axes")
        axis = axes.pop()
        assert axis is not None
        concat_axis = int(_attr(node, "axis")) % self._rank(node.input[0], node, index)
        if concat_axis == axis:
            raise PrepareError(f"{_label(node, index)} concatenates along the batch axis")
        return axis

    def _split(self, node: onnx.NodeProto, index: int, in_axes: list[int | None]) -> int:
        axis = self._only_input_batched(node, index, in_axes)
        if int(_attr(node, "axis", 0)) % self._rank(node.input[0], node, index) == axis:
            raise PrepareError(f"{_label(node, index)} splits along the batch axis")
        return axis

    def _slice(self, node: onnx.NodeProto, index: int, in_axes: list[int | None]) -> int:
        axis = self._only_input_batched(node, index, in_axes)
        rank = self._rank(node.input[0], node, index)
        if self.opset < 10:
            starts, ends = list(_attr(node, "starts")), list(_attr(node, "ends"))
            axes = list(_attr(node, "axes", range(len(starts))))
            steps = [1] * len(starts)
        else:
            starts = self._const_ints(node.input[1], node, index, "start")
            ends = self._const_ints(node.input[2], node, index, "end")
            axes = self._ints_attr_or_input(node, index, "axes", 3) or list(range(len(starts)))
            steps = self._ints_attr_or_input(node, index, "steps", 4) or [1] * len(starts)
        for start, end, a, step in zip(starts, ends, axes, steps, strict=True):
            # Only a no-op slice of the batch axis keeps every frame.
            if a % rank == axis and not (start == 0 and end >= _SLICE_TO_END and step == 1):
                raise PrepareError(f"{_label(node, index)} slices the batch axis ({start}:{end}:{step})")
        return axis

    def _gather(self, node: onnx.NodeProto, index: int, in_axes: list[int | None]) -> int:
        data_axis, indices_axis = in_axes[0], in_axes[1]
        gather_axis = int(_attr(node, "axis", 0)) % self._rank(node.input[0], node, index)
        if data_axis is not None and indices_axis is not None:
            raise PrepareError(f"{_label(node, index)} gathers batched data with batched indices")
        if indices_axis is not None:
            return gather_axis + indices_axis  # output = data[:g] + indices.shape + data[g+1:]
        assert data_axis is not None
        if gather_axis == data_axis:
            raise PrepareError(f"{_label(node, index)} gathers along the batch axis")
        indices_rank = self._rank(node.input[1], node, index)
        return data_axis if data_axis < gather_axis else data_axis + indices_rank - 1

    def _flatten(self, node: onnx.NodeProto, index: int, in_axes: list[int | None]) -> int:
        axis = self._only_input_batched(node, index, in_axes)
        shape = self._static_shape(node.input[0], node, index)
        split = int(_attr(node, "axis", 1)) % (len(shape) + 1)
        # Output is [prod(shape[:split]), prod(shape[split:])]: the batch survives only if it is the
        # sole non-1 contributor to the first factor.
        if axis < split and all(d == 1 for i, d in enumerate(shape[:split]) if i != axis):
            return 0
        raise PrepareError(f"{_label(node, index)} (axis={split}) folds the batch axis into other dimensions")

    def _squeeze(self, node: onnx.NodeProto, index: int, in_axes: list[int | None]) -> int:
        axis = self._only_input_batched(node, index, in_axes)
        rank = self._rank(node.input[0], node, index)
        axes = self._ints_attr_or_input(node, index, "axes", 1)
        if not axes:
            raise PrepareError(f"{_label(node, index)} squeezes every axis of size 1, batch included")
        axes = [a % rank for a in axes]
        if axis in axes:
            raise PrepareError(f"{_label(node, index)} squeezes the batch axis away")
        return axis - sum(a < axis for a in axes)

    def _unsqueeze(self, node: onnx.NodeProto, index: int, in_axes: list[int | None]) -> int:
        axis = self._only_input_batched(node, index, in_axes)
        axes = self._ints_attr_or_input(node, index, "axes", 1) or []
        out_rank = self._rank(node.input[0], node, index) + len(axes)
        inserted = {a % out_rank for a in axes}
        kept = [i for i in range(out_rank) if i not in inserted]
        return kept[axis]

    def _reshape(self, node: onnx.NodeProto, index: int, in_axes: list[int | None]) -> int:
        label = _label(node, index)
        if len(node.input) < 2:
            raise PrepareError(f"{label} uses the opset<5 'shape' attribute, which is not supported")
        if in_axes[1] is not None:
            raise PrepareError(f"{label} has a target shape computed from the batched tensor")
        if node.input[1] not in self.consts:
            raise PrepareError(
                f"{label} has a computed target shape that depends on batch 1 in a way that cannot be "
                "rewritten (only constant targets are)"
            )
        axis = in_axes[0]
        assert axis is not None
        target = self._const_ints(node.input[1], node, index, "target shape")
        if axis != 0:
            raise PrepareError(f"{label} reshapes a tensor whose batch is on axis {axis}, not 0")
        in_shape = self._static_shape(node.input[0], node, index)
        allowzero = int(_attr(node, "allowzero", 0))
        resolved = _resolve_reshape(in_shape, target, allowzero)
        if resolved is None or not target or resolved[0] != 1:
            # e.g. [-1], [3, -1] or [1*a*b] on [1, a, b]: the frames would be merged with each other.
            raise PrepareError(
                f"{label} folds the batch axis into other dimensions (target {target} on input {in_shape})"
            )
        lead = target[0]
        if lead == -1 or (lead == 0 and not allowzero):
            return 0  # -1 resolves to N and 0 copies N at run time: already batch-proof
        # lead == 1 (the resolved size): take it from the input instead, with Reshape's 0 = "copy".
        if allowzero:
            if 0 in target[1:]:
                raise PrepareError(
                    f"{label} has allowzero=1 and a zero-sized dimension: its batch cannot be made dynamic"
                )
            self.drop_allowzero.add(index)  # with no other 0 in the target, allowzero changes nothing else
        self.new_targets[index] = np.array([0, *target[1:]], dtype=np.int64)
        return 0

    def _softmax(self, node: onnx.NodeProto, index: int, in_axes: list[int | None]) -> int:
        axis = self._only_input_batched(node, index, in_axes)
        rank = self._rank(node.input[0], node, index)
        if self.opset < 13:
            # Before opset 13 the input is coerced to 2-D at `axis`: the batch must stay in the rows.
            split = int(_attr(node, "axis", 1)) % rank
            if axis >= split:
                raise PrepareError(f"{_label(node, index)} normalises over the batch axis")
        elif int(_attr(node, "axis", -1)) % rank == axis:
            raise PrepareError(f"{_label(node, index)} normalises over the batch axis")
        return axis

    def _argmax(self, node: onnx.NodeProto, index: int, in_axes: list[int | None]) -> int:
        axis = self._only_input_batched(node, index, in_axes)
        reduced = int(_attr(node, "axis", 0)) % self._rank(node.input[0], node, index)
        if reduced == axis:
            raise PrepareError(f"{_label(node, index)} reduces over the batch axis")
        return axis if _attr(node, "keepdims", 1) or reduced > axis else axis - 1

    def _topk(self, node: onnx.NodeProto, index: int, in_axes: list[int | None]) -> int:
        axis = self._only_input_batched(node, index, in_axes)
        if int(_attr(node, "axis", -1)) % self._rank(node.input[0], node, index) == axis:
            raise PrepareError(f"{_label(node, index)} selects along the batch axis")
        return axis

    def _cumsum(self, node: onnx.NodeProto, index: int, in_axes: list[int | None]) -> int:
        axis = self._only_input_batched(node, index, in_axes)
        summed = self._const_ints(node.input[1], node, index, "axis")[0]
        if summed % self._rank(node.input[0], node, index) == axis:
            raise PrepareError(f"{_label(node, index)} accumulates along the batch axis")
        return axis

    def _matmul(self, node: onnx.NodeProto, index: int, in_axes: list[int | None]) -> int:
        # Only the common "activations @ weights" form: rows of A are independent, B is 2-D and fixed.
        axis = self._only_input_batched(node, index, in_axes)
        a_rank = self._rank(node.input[0], node, index)
        if a_rank < 2 or axis == a_rank - 1 or self._rank(node.input[1], node, index) > 2:
            raise PrepareError(f"{_label(node, index)} contracts or broadcasts over the batch axis")
        return axis

    def _gemm(self, node: onnx.NodeProto, index: int, in_axes: list[int | None]) -> int:
        axis = self._only_input_batched(node, index, in_axes)
        if axis != 0 or _attr(node, "transA", 0):
            raise PrepareError(f"{_label(node, index)} contracts over the batch axis")
        if len(node.input) > 2 and node.input[2]:
            c_shape = self.shapes.get(node.input[2])
            if c_shape is None or (len(c_shape) == 2 and c_shape[0] != 1):
                raise PrepareError(f"{_label(node, index)} adds a bias fixed to batch 1 ({c_shape})")
        return 0

    def _expand(self, node: onnx.NodeProto, index: int, in_axes: list[int | None]) -> int:
        axis = self._only_input_batched(node, index, in_axes)
        shape = self._const_ints(node.input[1], node, index, "shape")
        rank = self._rank(node.input[0], node, index)
        pos = max(rank, len(shape)) - rank + axis
        offset = max(rank, len(shape)) - len(shape)
        if pos >= offset and shape[pos - offset] != 1:
            raise PrepareError(f"{_label(node, index)} expands the batch axis to {shape[pos - offset]}")
        return pos

    def _tile(self, node: onnx.NodeProto, index: int, in_axes: list[int | None]) -> int:
        axis = self._only_input_batched(node, index, in_axes)
        if self._const_ints(node.input[1], node, index, "repeats")[axis] != 1:
            raise PrepareError(f"{_label(node, index)} repeats the batch axis")
        return axis

    def _pad(self, node: onnx.NodeProto, index: int, in_axes: list[int | None]) -> int:
        axis = self._only_input_batched(node, index, in_axes)
        rank = self._rank(node.input[0], node, index)
        if len(node.input) > 3 and node.input[3]:
            raise PrepareError(f"{_label(node, index)} uses the 'axes' input, which is not supported")
        pads = self._ints_attr_or_input(node, index, "pads", 1) or [0] * (2 * rank)
        if pads[axis] or pads[axis + rank]:
            raise PrepareError(f"{_label(node, index)} pads the batch axis")
        return axis

    def _resize(self, node: onnx.NodeProto, index: int, in_axes: list[int | None]) -> int:
        axis = self._only_input_batched(node, index, in_axes)
        if node.op_type == "Resize" and self.opset >= 11:
            sizes = node.input[3] if len(node.input) > 3 else ""
            if sizes and (sizes not in self.consts or self.consts[sizes].size):
                # Output sizes hard-code the batch of 1 like a Reshape target; not worth a rewrite yet.
                raise PrepareError(f"{_label(node, index)} has output sizes that include batch 1")
            scales_name = node.input[2] if len(node.input) > 2 else ""
        else:
            scales_name = node.input[1] if len(node.input) > 1 else ""
        attr_scales = _attr(node, "scales")
        if attr_scales is not None:  # Upsample before opset 9
            scales = [float(s) for s in attr_scales]
        else:
            value = self.consts.get(scales_name)
            if value is None:
                raise PrepareError(f"{_label(node, index)} has computed scales: cannot prove the batch safe")
            scales = [float(s) for s in value.reshape(-1)]
        if len(scales) <= axis:
            raise PrepareError(f"{_label(node, index)} has no scale for the batch axis")
        if scales[axis] != 1.0:
            raise PrepareError(f"{_label(node, index)} rescales the batch axis (scale {scales[axis]})")
        return axis


def _constant_value(node: onnx.NodeProto) -> npt.NDArray[Any] | None:
    """The value of a Constant node, whatever attribute form it uses; None for sparse tensors."""
    for a in node.attribute:
        if a.name == "value":
            return numpy_helper.to_array(a.t)
        if a.name in ("value_int", "value_float"):
            return np.array(helper.get_attribute_value(a))
        if a.name in ("value_ints", "value_floats"):
            return np.array(list(helper.get_attribute_value(a)))
    return None


def _resolve_reshape(in_shape: Sequence[int], target: Sequence[int], allowzero: int) -> list[int] | None:
    """Reshape's output shape under ONNX rules (0 copies, -1 infers); None if the target is invalid."""
    out = [
        in_shape[i] if (t == 0 and not allowzero and i < len(in_shape)) else t for i, t in enumerate(target)
    ]
    total = math.prod(in_shape)
    if out.count(-1) > 1:
        return None
    if -1 in out:
        known = math.prod(d for d in out if d != -1)
        if known == 0 or total % known:
            return None
        out[out.index(-1)] = total // known
    return out if math.prod(out) == total else None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# ---------------------------------------------------------------------------------------------------
# Rewrite
# ---------------------------------------------------------------------------------------------------


def _unique_name(base: str, taken: set[str]) -> str:
    name, i = base, 1
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    taken.add(name)
    return name


def _set_batch_dim(value: onnx.ValueInfoProto) -> None:
    """Name the leading dimension "batch" (an output with no declared shape is left to inference)."""
    if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].Clear()
            dims[0].dim_param = BATCH_DIM


def rewrite_batch(model: onnx.ModelProto) -> BatchRewrite:
    """Return a copy of ``model`` whose batch axis is symbolic, with the Reshapes that need it rewritten.

    Raises :class:`PrepareError` (one line, naming the node) for any construct the analysis cannot
    prove batch-safe. A model that already has a symbolic batch is returned as an unchanged copy.
    """
    new = onnx.ModelProto()
    new.CopyFrom(model)
    if has_dynamic_batch(model):
        return BatchRewrite(new, 0)

    analysis = _BatchAnalysis(model)
    analysis.run()
    for output in model.graph.output:
        axis = analysis.axis.get(output.name)
        if axis is None:
            raise PrepareError(f"output {output.name!r} does not depend on the input image")
        if axis != 0:
            raise PrepareError(f"output {output.name!r} carries the batch on axis {axis}, not 0")

    graph = new.graph
    taken = {n for node in graph.node for n in (*node.input, *node.output)}
    taken |= {v.name for v in (*graph.initializer, *graph.input, *graph.output)}
    replaced: dict[tuple[str, bytes], str] = {}  # (old target, new value) -> new initializer, shared
    old_targets: set[str] = set()
    for index, target in sorted(analysis.new_targets.items()):
        node = graph.node[index]
        key = (node.input[1], target.tobytes())
        if key not in replaced:
            replaced[key] = _unique_name(f"{node.input[1]}_dynbatch", taken)
            graph.initializer.append(numpy_helper.from_array(target, replaced[key]))
        old_targets.add(node.input[1])
        node.input[1] = replaced[key]
        if index in analysis.drop_allowzero:
            kept = [a for a in node.attribute if a.name != "allowzero"]
            del node.attribute[:]
            node.attribute.extend(kept)
    _drop_unused(graph, old_targets)

    # The exporter's intermediate shapes all say batch 1; onnxruntime re-infers them, so drop them.
    del graph.value_info[:]
    _set_batch_dim(image_input(graph))
    for output in graph.output:
        _set_batch_dim(output)
    return BatchRewrite(new, len(analysis.new_targets))


def make_batch_dynamic(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` that takes any batch size (see :func:`rewrite_batch` for the details)."""
    return rewrite_batch(model).model


def _drop_unused(graph: onnx.GraphProto, names: set[str]) -> None:
    """Remove the replaced Reshape targets that nothing reads any more (initializer or Constant node)."""
    used = {n for node in graph.node for n in node.input} | {o.name for o in graph.output}
    for node in graph.node:
        used |= _subgraph_names(node)
    dead = names - used
    if not dead:
        return
    for container in (graph.initializer, graph.input):
        kept = [item for item in container if item.name not in dead]
        del container[:]
        container.extend(kept)
    nodes = [node for node in graph.node if not (node.op_type == "Constant" and node.output[0] in dead)]
    del graph.node[:]
    graph.node.extend(nodes)


# ---------------------------------------------------------------------------------------------------
# Verification
# ---------------------------------------------------------------------------------------------------


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise PrepareError("onnxruntime is not installed: install flux-secu[cpu] or flux-secu[gpu]") from None
    return ort


def _session(source: ModelSource) -> Any:
    ort = _import_onnxruntime()
    options = ort.SessionOptions()
    options.log_severity_level = 3  # NanoDet's old exporter triggers many harmless warnings
    options.intra_op_num_threads = 1  # the machine is shared; one thread also keeps results reproducible
    options.inter_op_num_threads = 1
    model = source.SerializeToString() if isinstance(source, onnx.ModelProto) else str(source)
    try:
        return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise PrepareError(f"onnxruntime cannot load the model: {_one_line(exc)}") from None


def sample_frames(shape: Sequence[int], dtype: npt.DTypeLike, batch: int, seed: int = 0) -> npt.NDArray[Any]:
    """``batch`` distinct image-like inputs of per-frame ``shape`` ([1, C, H, W]).

    Frames must differ from each other, or a graph that mixes frames would go unnoticed. They are
    blocky random pictures with pixel noise; the model's normalisation is unknown here, so even frames
    are raw pixels (0-255, what YOLOX takes) and odd frames are standardised (~N(0, 1), what NanoDet
    takes): whichever the model expects, half the batch is in its working range.
    """
    _, c, h, w = (int(d) for d in shape)
    rng = np.random.default_rng(seed)
    block = 8
    coarse = rng.uniform(0.0, 255.0, size=(batch, c, -(-h // block), -(-w // block)))
    frames = np.repeat(np.repeat(coarse, block, axis=2), block, axis=3)[:, :, :h, :w]
    frames = np.clip(frames + rng.normal(0.0, 8.0, size=frames.shape), 0.0, 255.0)
    np_dtype = np.dtype(dtype)
    if np.issubdtype(np_dtype, np.floating):
        frames[1::2] = (frames[1::2] - 120.0) / 58.0
    else:
        frames = np.rint(frames)
    return np.ascontiguousarray(frames.astype(np_dtype))


def verify_batch(
    original: ModelSource,
    prepared: ModelSource,
    batch: int = 4,
    atol: float = 1e-4,
    seed: int = 0,
    inputs: npt.NDArray[Any] | None = None,
) -> float:
    """Max abs difference between one batch through ``prepared`` and single runs through ``original``.

    ``inputs`` ([N, C, H, W], already preprocessed) defaults to :func:`sample_frames`. Every output is
    compared, frame by frame; raises :class:`PrepareError` if the shapes differ or the difference
    exceeds ``atol``, or if the prepared model fails on the batch.
    """
    single = _session(original)
    batched = single if prepared is original else _session(prepared)
    model_input = single.get_inputs()[0]
    if inputs is None:
        if batch < 1:
            raise PrepareError(f"batch must be at least 1, got {batch}")
        shape = model_input.shape
        if len(shape) != 4 or not all(isinstance(d, int) for d in shape[1:]):
            raise PrepareError(f"input {model_input.name!r} has shape {shape}: cannot draw test frames")
        dtype = helper.tensor_dtype_to_np_dtype(_ORT_TYPES.get(model_input.type, onnx.TensorProto.FLOAT))
        inputs = sample_frames([1, *shape[1:]], dtype, batch, seed)
    n = len(inputs)
    names = [o.name for o in single.get_outputs()]
    quiet = _import_onnxruntime().RunOptions()
    quiet.log_severity_level = 3  # a failing run is reported by our exception, not also on stderr
    try:
        singles = [single.run(names, {model_input.name: inputs[i : i + 1]}, quiet) for i in range(n)]
    except Exception as exc:  # onnxruntime raises its own exception types
        raise PrepareError(f"the original model fails on a single frame: {_one_line(exc)}") from None
    try:
        together = batched.run(names, {batched.get_inputs()[0].name: inputs}, quiet)
    except Exception as exc:
        raise PrepareError(f"the prepared model fails on a batch of {n}: {_one_line(exc)}") from None

    worst = 0.0
    for k, name in enumerate(names):
        expected = np.concatenate([np.asarray(s[k]) for s in singles], axis=0)
        got = np.asarray(together[k])
        if got.shape != expected.shape:
            raise PrepareError(
                f"output {name!r} has shape {list(got.shape)} for a batch of {n}, "
                f"expected {list(expected.shape)} from {n} single runs"
            )
        diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
        # A NaN where the single runs also give NaN is agreement; anywhere else it is a mismatch.
        both_nan = np.isnan(got) & np.isnan(expected) if np.issubdtype(got.dtype, np.floating) else False
        diff = np.where(both_nan, 0.0, np.nan_to_num(diff, nan=np.inf))
        if diff.size:
            worst = max(worst, float(diff.max()))
        if worst > atol:
            raise PrepareError(
                f"batch of {n} differs from {n} single runs by {worst:.3g} (> {atol:g}) on output {name!r}"
            )
    return worst


# onnxruntime reports input types as strings such as "tensor(float)".
_ORT_TYPES = {
    "tensor(float)": onnx.TensorProto.FLOAT,
    "tensor(float16)": onnx.TensorProto.FLOAT16,
    "tensor(double)": onnx.TensorProto.DOUBLE,
    "tensor(uint8)": onnx.TensorProto.UINT8,
    "tensor(int8)": onnx.TensorProto.INT8,
}


# ---------------------------------------------------------------------------------------------------
# Whole command
# ---------------------------------------------------------------------------------------------------


def load_model(path: Path) -> onnx.ModelProto:
    """Read and check an ONNX file, turning every way it can be unreadable into one PrepareError."""
    try:
        model = onnx.load(str(path))
        if not model.graph.node:
            raise ValueError("the file holds no graph")
        onnx.checker.check_model(model)
    except Exception as exc:  # protobuf, onnx checker and OS errors alike
        raise PrepareError(f"cannot read {path} as an ONNX model: {_one_line(exc)}") from None
    return model


def prepare_model(in_path: Path, out_path: Path, batch: int = 4) -> PrepareReport:
    """Write to ``out_path`` a batch-dynamic version of ``in_path``, verified on a batch of ``batch``.

    The result is written to a temporary file beside ``out_path`` and only renamed into place once
    checked and verified, so a failure never leaves a half-prepared model behind (nor overwrites an
    existing one, even when ``out_path`` is ``in_path``).
    """
    in_path, out_path = Path(in_path), Path(out_path)
    if batch < 2:
        raise PrepareError(f"verification needs a batch of at least 2, got {batch}")
    model = load_model(in_path)
    already_dynamic = has_dynamic_batch(model)
    name = image_input(model.graph).name
    partial = out_path.with_name(f".{out_path.name}.partial")
    try:
        if already_dynamic:
            shutil.copyfile(in_path, partial)
            rewritten = 0
        else:
            result = rewrite_batch(model)
            try:
                onnx.checker.check_model(result.model, full_check=True)
            except Exception as exc:
                raise PrepareError(f"the rewritten model fails the ONNX checker: {_one_line(exc)}") from None
            onnx.save(result.model, str(partial))
            rewritten = result.rewritten_reshapes
        diff = verify_batch(in_path, partial, batch=batch)
        os.replace(partial, out_path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise
    return PrepareReport(
        input_name=name,
        batch=batch,
        rewritten_reshapes=rewritten,
        max_abs_diff=diff,
        already_dynamic=already_dynamic,
    )
