"""The ONNX graph of a tabular model: raw columns in, the encoding and the linear map inside.

One input per raw column, ``[batch, 1]``: numeric columns in the model's float dtype (NaN for a
blank), categorical columns as strings (``""`` for a blank). Built only from standard operators
that onnxruntime runs on the CPU, in Node.js and in WebAssembly (``Equal`` on strings needs
opset 19):

1. numeric:      x_filled = Where(IsNaN(x), fill, x);   indicator = Cast(IsNaN(x), float)
2. categorical:  c = Where(MatMul(Cast(Equal(c, [[NA tokens]])), 1) == 0, c, "")  (a blank)
                 onehot = Cast(Equal(c, [[coded levels]]), float)               [batch, K]
                 unknown = Equal(MatMul(Cast(Equal(c, [[all levels]])), 1), 0)  (policy error)
3. X = Concat(blocks, axis=1);  prediction = Gemm(X, W, b, transB=1)
                 + Where(unknown, NaN, 0) per checked column: a row the model cannot predict
                 comes out NaN, which every consumer refuses (linreg names the cell).
4. with intervals (``linreg-export --intervals``, for plain models too, input ``features``):
   prediction_lower/upper (a new observation) and mean_lower/upper (the mean) from the
   covariance of the estimates and σ̂, the quantile fixed at export (:func:`_interval_nodes`).
5. with contributions (``linreg-export --contributions``): contributions = Gemm(X, B, c)
   + the same NaN penalties, ``[batch, targets · terms]`` (:mod:`trainer.contributions`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from serve.core.columns import ColumnSpec
from serve.core.graph import CONTRIBUTIONS, INTERVAL_OUTPUTS, PREDICTION

OUTPUT = PREDICTION
FEATURES = "features"
MIN_OPSET = 19  # Equal on strings
_ELEM = {"float32": TensorProto.FLOAT, "float64": TensorProto.DOUBLE}


def needs_opset(specs: Sequence[ColumnSpec]) -> int:
    """The lowest opset this model's graph can use."""
    return MIN_OPSET if any(s.kind == "categorical" for s in specs) else 13


def tabular_graph(specs: Sequence[ColumnSpec] | None, weight: np.ndarray,
                  bias: np.ndarray | None, *, dtype: str, opset: int,
                  intervals: Intervals | None = None,
                  na: Sequence[str] = (), formula: Any = None,
                  contributions: Any = None) -> onnx.ModelProto:
    """The whole model as an ONNX ModelProto (metadata is added by the caller): raw columns
    in (``specs``), or the plain ``features`` matrix (``specs`` None, used with intervals).
    A categorical cell whose text is one of ``na`` (the NA tokens) is a blank. With
    ``formula`` (a :class:`trainer.formula.FormulaSpec`) the design is the formula's, compiled
    by :func:`trainer.formula.formula_nodes` from the raw columns ``specs``. With
    ``contributions`` (a :class:`trainer.contributions.Contributions`) the last output is
    each term's contribution."""
    np_dtype, elem = np.dtype(dtype), _ELEM[dtype]
    nodes, inits, inputs, blocks, penalties = [], [], [], [], []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), f"linreg/{name}"))
        return f"linreg/{name}"

    def node(op: str, ins: list[str], out: str, **attrs) -> str:
        nodes.append(helper.make_node(op, ins, [f"linreg/{out}"], **attrs))
        return f"linreg/{out}"

    if specs is None:
        inputs.append(helper.make_tensor_value_info(FEATURES, elem, ["batch", weight.shape[1]]))
        blocks.append(FEATURES)
    if formula is not None:
        from trainer.formula_graph import formula_nodes

        cells = {}
        for j, spec in enumerate(specs or []):
            inputs.append(helper.make_tensor_value_info(
                spec.name, TensorProto.STRING if spec.kind == "categorical" else elem,
                ["batch", 1]))
            if spec.kind == "categorical" and na:  # an NA token is a blank, as below
                cells[spec.name] = _na_to_blank(spec.name, j, na, np_dtype, const, node)
        design, penalties = formula_nodes(formula, elem=elem, np_dtype=np_dtype,
                                          const=lambda name, v: const(name, v), node=node,
                                          cells=cells)
        blocks.append(design)
    for j, spec in enumerate((specs or []) if formula is None else []):
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
        if na:
            x = _na_to_blank(x, j, na, np_dtype, const, node)
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
    names = [OUTPUT]
    if intervals is not None:  # 4.
        bounds = _interval_nodes(X, out, intervals, bias is not None, np_dtype, const, node)
        names += list(INTERVAL_OUTPUTS)
        for name, ref in zip(INTERVAL_OUTPUTS, bounds):
            nodes.append(helper.make_node("Identity", [ref], [name]))
    nodes.append(helper.make_node("Identity", [out], [OUTPUT]))
    outputs = [helper.make_tensor_value_info(n, elem, ["batch", weight.shape[0]]) for n in names]
    if contributions is not None:  # 5.
        B, c = contributions.gemm()
        share = node("Gemm", [X, const("contrib_weight", B.astype(np_dtype)),
                              const("contrib_offset", c.astype(np_dtype))], "contrib")
        for p in penalties:
            share = node("Add", [share, p], f"contrib_plus_{p.rsplit('/', 2)[-2]}")
        nodes.append(helper.make_node("Identity", [share], [CONTRIBUTIONS]))
        outputs.append(helper.make_tensor_value_info(CONTRIBUTIONS, elem, ["batch", B.shape[1]]))
    graph = helper.make_graph(nodes, "linreg", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 10)  # what onnxruntime 1.20+ reads
    return model


def _na_to_blank(x: str, j: int, na: Sequence[str], np_dtype, const, node) -> str:
    """2. A categorical column's cells with every NA token turned into "" (a blank)."""
    elem = _ELEM[np.dtype(np_dtype).name]
    hits = node("Cast", [node("Equal", [x, const(f"{j}/na", _strings(sorted(na)))],
                              f"{j}/is_na_token")], f"{j}/is_na_f", to=elem)
    count = node("MatMul", [hits, const(f"{j}/na_ones", np.ones((len(na), 1), np_dtype))],
                 f"{j}/na_count")
    kept = node("Equal", [count, const(f"{j}/na_zero", np.zeros((1, 1), np_dtype))],
                f"{j}/not_na")
    return node("Where", [kept, x, const(f"{j}/blank", _strings([""]))], f"{j}/cells")


@dataclass(frozen=True)
class Intervals:
    """What the interval outputs need: the covariance of the estimates per target
    (targets, p, p; intercept first), σ̂ per target and the quantile for the level."""

    cov: np.ndarray
    sigma: np.ndarray
    quantile: float


def _interval_nodes(X: str, pred: str, iv: Intervals, has_bias: bool, np_dtype, const,
                    node) -> list[str]:
    """4. Per target t, with x a row of the design matrix and C = cov[t] (intercept first):
    v = x Cxx xᵀ + 2 x c_x0 + c_00 (the variance of the mean), se_mean = √v,
    se_obs = √(v + σ̂²); bounds = prediction ∓ q·se. The variance is computed in float64 even
    in a float32 model: x Cxx xᵀ cancels (a formula's I(x ** 2) and np.exp make large design
    values), and float32 would lose the half-width's digits to it."""
    f64 = np.dtype(np.float64)
    if np_dtype != f64:
        X = node("Cast", [X], "iv/x64", to=TensorProto.DOUBLE)
    variances = []
    for t, C in enumerate(iv.cov):
        k = 1 if has_bias else 0
        cxx = C[k:, k:]
        quad = node("MatMul", [node("Mul", [node("MatMul", [X, const(f"iv{t}/cxx",
                                                                     cxx.astype(f64))],
                                                 f"iv{t}/xc"), X], f"iv{t}/xcx"),
                               const(f"iv{t}/ones", np.ones((cxx.shape[0], 1), f64))],
                    f"iv{t}/quad")
        if has_bias:
            cross = node("MatMul", [X, const(f"iv{t}/cx0", (2 * C[1:, :1]).astype(f64))],
                         f"iv{t}/cross")
            quad = node("Add", [node("Add", [quad, cross], f"iv{t}/q1"),
                                const(f"iv{t}/c00", C[:1, :1].astype(f64))], f"iv{t}/var")
        variances.append(quad)
    var = node("Concat", variances, "iv/var", axis=1) if len(variances) > 1 else variances[0]
    var = node("Max", [var, const("iv/zero", np.zeros((1, 1), f64))], "iv/var_pos")
    q = const("iv/q", np.array([[iv.quantile]], f64))
    se_mean = node("Mul", [node("Sqrt", [var], "iv/se_mean"), q], "iv/half_mean")
    s2 = const("iv/sigma2", (iv.sigma**2).reshape(1, -1).astype(f64))
    se_obs = node("Mul", [node("Sqrt", [node("Add", [var, s2], "iv/var_obs")], "iv/se_obs"), q],
                  "iv/half_obs")
    if np_dtype != f64:  # back to the model's dtype, beside its prediction
        se_mean = node("Cast", [se_mean], "iv/half_mean32", to=TensorProto.FLOAT)
        se_obs = node("Cast", [se_obs], "iv/half_obs32", to=TensorProto.FLOAT)
    return [node("Sub", [pred, se_obs], "iv/obs_lower"),
            node("Add", [pred, se_obs], "iv/obs_upper"),
            node("Sub", [pred, se_mean], "iv/mean_lower"),
            node("Add", [pred, se_mean], "iv/mean_upper")]


def _strings(levels: Sequence[str]) -> np.ndarray:
    return np.array([list(levels)], dtype=object)
