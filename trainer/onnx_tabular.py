"""The ONNX graph of a tabular model: raw columns in, the encoding and the linear map inside.

One input per raw column, ``[batch, 1]``: numeric columns in the model's float dtype (NaN for a
blank), categorical columns as strings (``""`` for a blank). Built only from standard operators
that onnxruntime runs on the CPU, in Node.js and in WebAssembly (``Equal`` on strings needs
opset 19):

1. numeric:      x_filled = Where(IsNaN(x), fill, x);   indicator = Cast(IsNaN(x), float)
2. categorical:  onehot = Cast(Equal(c, [[coded levels]]), float)               [batch, K]
                 unknown = Equal(MatMul(Cast(Equal(c, [[all levels]])), 1), 0)  (policy error)
3. X = Concat(blocks, axis=1);  prediction = Gemm(X, W, b, transB=1)
                 + Where(unknown, NaN, 0) per checked column: a row the model cannot predict
                 comes out NaN, which every consumer refuses (linreg names the cell).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from serve.columns import ColumnSpec

OUTPUT = "prediction"
MIN_OPSET = 19  # Equal on strings
_ELEM = {"float32": TensorProto.FLOAT, "float64": TensorProto.DOUBLE}


def needs_opset(specs: Sequence[ColumnSpec]) -> int:
    """The lowest opset this model's graph can use."""
    return MIN_OPSET if any(s.kind == "categorical" for s in specs) else 13


def tabular_graph(specs: Sequence[ColumnSpec], weight: np.ndarray, bias: np.ndarray | None,
                  *, dtype: str, opset: int) -> onnx.ModelProto:
    """The whole model as an ONNX ModelProto (metadata is added by the caller)."""
    np_dtype, elem = np.dtype(dtype), _ELEM[dtype]
    nodes, inits, inputs, blocks, penalties = [], [], [], [], []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(value, f"linreg/{name}"))
        return f"linreg/{name}"

    def node(op: str, ins: list[str], out: str, **attrs) -> str:
        nodes.append(helper.make_node(op, ins, [f"linreg/{out}"], **attrs))
        return f"linreg/{out}"

    for j, spec in enumerate(specs):
        x = spec.name
        if spec.kind == "numeric":  # 1.
            inputs.append(helper.make_tensor_value_info(x, elem, ["batch", 1]))
            if spec.fill is None:
                blocks.append(x)
                continue
            nan = node("IsNaN", [x], f"{j}/isnan")
            blocks.append(node("Where", [nan, const(f"{j}/fill", np.full((1, 1), spec.fill,
                                                                        np_dtype)), x],
                               f"{j}/filled"))
            if spec.indicator:
                blocks.append(node("Cast", [nan], f"{j}/indicator", to=elem))
            continue
        inputs.append(helper.make_tensor_value_info(x, TensorProto.STRING, ["batch", 1]))  # 2.
        coded = spec.coded_levels
        if coded:
            eq = node("Equal", [x, const(f"{j}/levels", _strings(coded))], f"{j}/equal")
            blocks.append(node("Cast", [eq], f"{j}/onehot", to=elem))
        if spec.unknown == "error":
            seen = node("Cast", [node("Equal", [x, const(f"{j}/known", _strings(spec.levels))],
                                      f"{j}/is_level")], f"{j}/is_level_f", to=elem)
            count = node("MatMul", [seen, const(f"{j}/ones", np.ones((len(spec.levels), 1),
                                                                      np_dtype))], f"{j}/count")
            unknown = node("Equal", [count, const(f"{j}/zero", np.zeros((1, 1), np_dtype))],
                           f"{j}/unknown")
            penalties.append(node("Where", [unknown, const(f"{j}/nan", np.full((1, 1), np.nan,
                                                                               np_dtype)),
                                            const(f"{j}/no", np.zeros((1, 1), np_dtype))],
                                  f"{j}/penalty"))
    X = node("Concat", blocks, "design", axis=1) if len(blocks) > 1 else blocks[0]  # 3.
    gemm_in = [X, const("weight", weight.astype(np_dtype))]
    if bias is not None:
        gemm_in.append(const("bias", bias.astype(np_dtype)))
    out = node("Gemm", gemm_in, "linear", transB=1)
    for p in penalties:
        out = node("Add", [out, p], f"plus_{p.rsplit('/', 2)[-2]}")
    nodes[-1].output[0] = OUTPUT
    outputs = [helper.make_tensor_value_info(OUTPUT, elem, ["batch", weight.shape[0]])]
    graph = helper.make_graph(nodes, "linreg", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 10)  # what onnxruntime 1.20+ reads
    return model


def _strings(levels: Sequence[str]) -> np.ndarray:
    return np.array([list(levels)], dtype=object)
