"""Half-precision export with float32 islands, at two levels.

Module level: the component is cast to float16/bfloat16, then every submodule of an island type
(GroupNorm, LayerNorm, a codebook search, ...) is replaced by :class:`Float32Island`, which keeps its
weights in float32 and runs it on float32 copies of its inputs. The exported graph is strongly typed:
every Cast is explicit, nothing depends on a builder's precision flags.

Graph level: ops whose reduction must stay float32 but that live inside a fused PyTorch function
(the Softmax of ``scaled_dot_product_attention``) get Cast nodes around them in the ONNX graph.
"""

from __future__ import annotations

import copy
import itertools
from typing import Mapping

import onnx
import torch
from onnx import TensorProto, helper
from torch import nn

from genrt.export.cleanup import without_weights
from genrt.sdk.nn.attention import UpcastAttention

# The islands every component keeps: normalisation statistics in float32, and the attention of models
# that ask for it (``upcast_attention``: Q.K^T, softmax and weighted sum).
DEFAULT_FP32_MODULES: dict[str, tuple[type[nn.Module], ...]] = {
    "group_norm": (nn.GroupNorm,),
    "layer_norm": (nn.LayerNorm,),
    "attention_upcast": (UpcastAttention,),
}
ONNX_FLOAT_TYPES = {
    torch.float32: TensorProto.FLOAT,
    torch.float16: TensorProto.FLOAT16,
    torch.bfloat16: TensorProto.BFLOAT16,
}


def _cast_floats(value, dtype: torch.dtype):
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.to(dtype)
    if isinstance(value, (tuple, list)):
        return type(value)(_cast_floats(item, dtype) for item in value)
    return value


class Float32Island(nn.Module):
    """Runs ``inner`` in float32 inside a half-precision model.

    Float tensor arguments are cast to float32 on the way in; float tensor results are cast back to
    the dtype of the first float argument (the surrounding model's dtype).
    """

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner.float()

    def forward(self, *args, **kwargs):
        outer = next((a.dtype for a in args if isinstance(a, torch.Tensor) and a.is_floating_point()), torch.float32)
        result = self.inner(*_cast_floats(args, torch.float32), **_cast_floats(kwargs, torch.float32))
        return _cast_floats(result, outer)


def cast_with_islands(
    module: nn.Module, dtype: torch.dtype, islands: Mapping[str, tuple[type[nn.Module], ...]]
) -> tuple[nn.Module, list[str]]:
    """A copy of ``module`` in ``dtype`` with island submodules kept float32; returns (copy, islands found).

    The copy is made tensor by tensor in its final dtype (the float32 original is never duplicated,
    which matters for multi-GB models), and island weights stay exactly float32. float32 returns an
    unmodified copy and no islands.
    """
    if dtype == torch.float32:
        return copy.deepcopy(module), []
    island_types = tuple(t for types in islands.values() for t in types)
    keep = {
        id(tensor)
        for sub in module.modules() if isinstance(sub, island_types)
        for tensor in itertools.chain(sub.parameters(), sub.buffers())
    }
    memo: dict[int, torch.Tensor] = {}
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        if id(tensor) in memo:
            continue
        to_dtype = tensor.is_floating_point() and id(tensor) not in keep
        data = tensor.detach().to(dtype) if to_dtype else tensor.detach().clone()
        memo[id(tensor)] = nn.Parameter(data, requires_grad=False) if isinstance(tensor, nn.Parameter) else data
    module = copy.deepcopy(module, memo)
    found: set[str] = set()

    def replace(parent: nn.Module) -> None:
        for child_name, child in parent.named_children():
            island = next((name for name, types in islands.items() if isinstance(child, types)), None)
            if island is not None:
                found.add(island)
                setattr(parent, child_name, Float32Island(child))
            else:
                replace(child)

    replace(module)
    return module, sorted(found)


def keep_ops_in_float32(model: onnx.ModelProto, op_types: tuple[str, ...]) -> list[str]:
    """Wrap every node of ``op_types`` whose input is float16/bfloat16 in Casts to and from float32.

    Edits ``model`` in place (it may be loaded without its external data); returns the lower-case op
    types that were wrapped (the manifest's graph-level islands).
    """
    inferred = onnx.shape_inference.infer_shapes(without_weights(model))
    elem_types = {
        info.name: info.type.tensor_type.elem_type
        for info in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
    }
    half_types = (TensorProto.FLOAT16, TensorProto.BFLOAT16)
    graph = model.graph
    new_nodes = []
    found: set[str] = set()
    for index, node in enumerate(graph.node):
        half = elem_types.get(node.input[0]) if node.input else None
        if node.op_type not in op_types or half not in half_types:
            new_nodes.append(node)
            continue
        found.add(node.op_type.lower())
        stem = node.name or f"{node.op_type}_{index}"
        upcast = f"{stem}/fp32_in"
        new_nodes.append(helper.make_node("Cast", [node.input[0]], [upcast], name=f"{stem}/cast_in", to=TensorProto.FLOAT))
        original_output = node.output[0]
        node.input[0] = upcast
        node.output[0] = f"{stem}/fp32_out"
        new_nodes.append(node)
        new_nodes.append(helper.make_node("Cast", [node.output[0]], [original_output], name=f"{stem}/cast_out", to=half))
    del graph.node[:]
    graph.node.extend(new_nodes)
    return sorted(found)
