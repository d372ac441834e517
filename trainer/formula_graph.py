"""The formula compiler: one walk of each factor's Python expression (``ast``) with two
backends, numpy (the design at training, checked against patsy's own) and ONNX nodes (the same
arithmetic inside model.onnx, :func:`formula_nodes`), so every consumer of the exported model
feeds raw columns and gets the formula's answer. :mod:`trainer.formula` learns what it compiles
(patsy's design, as a :class:`trainer.formula.FormulaSpec`).

What compiles: numbers and the four operations, powers by a constant, ``I()``, the numpy
functions of :data:`FUNCTIONS`, ``center()``/``standardize()`` (their learned statistics),
``poly()`` (formulaic's three-term recurrence) and ``bs()`` (patsy's B-splines: one polynomial
per knot interval, NaN outside the training range), and categorical factors by their contrast
matrices; anything else is refused in one line naming it.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from trainer.config import TrainingError

FUNCTIONS = {"np.log": "Log", "np.log1p": "Log1p", "np.exp": "Exp", "np.sqrt": "Sqrt",
             "np.abs": "Abs", "numpy.log": "Log", "numpy.exp": "Exp", "numpy.sqrt": "Sqrt"}
_NUMPY = {"Log": np.log, "Log1p": np.log1p, "Exp": np.exp, "Sqrt": np.sqrt, "Abs": np.abs}
CODINGS = ("Treatment", "T", "Sum", "Diff", "Helmert", "Poly")  # patsy's: contrast matrices
_OPS = {ast.Add: "Add", ast.Sub: "Sub", ast.Mult: "Mul", ast.Div: "Div", ast.Pow: "Pow"}


MULTI_COLUMN = ("poly", "bs")  # transforms that give several columns


def refusal(what: str) -> TrainingError:
    return TrainingError(f"--formula: {what} is not supported; use numeric columns, C(column), "
                         "interactions (a:b, a*b), I(...) arithmetic, np.log, np.log1p, np.exp, "
                         "np.sqrt, np.abs, center(), standardize(), poly() or bs()")


def parse_code(code: str) -> ast.expr:
    """A term's Python expression, or a one-line refusal of text that is not one."""
    try:
        return ast.parse(code, mode="eval").body
    except SyntaxError:
        raise TrainingError(f"--formula: {code!r} is not a Python expression; write terms such "
                            "as a, C(city), a:b, I(a ** 2), np.log(b)") from None


def dotted_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = dotted_name(node.value)
        return None if head is None else f"{head}.{node.attr}"
    return None


def poly_columns(x: Any, alpha: Sequence[float], norms2: Sequence[float], degree: int,
                  b: Any) -> list[Any]:
    """The recurrence of :class:`Poly` with backend ``b`` (numpy or ONNX nodes)."""
    prev, cur, out = None, b.binop("Sub", x, b.const(alpha[0])), []
    for k in range(1, degree + 1):
        out.append(b.binop("Div", cur, b.const(math.sqrt(norms2[k]))))
        if k == degree:
            break
        nxt = b.binop("Mul", b.binop("Sub", x, b.const(alpha[k])), cur)
        nxt = b.binop("Sub", nxt, b.binop("Mul", b.const(norms2[k] / norms2[k - 1]),
                                           prev if prev is not None else b.const(1.0)))
        prev, cur = cur, nxt
    return out


def _bspline_pieces(knots: Sequence[float], degree: int) -> list[tuple[float, np.ndarray]]:
    """patsy's B-spline basis (all knots, boundaries repeated) as one polynomial per knot
    interval: ``(start a, C)`` with basis(x) = Σₚ C[p]·(x − a)ᵖ on [a, next start), the last
    interval closed (as scipy's ``splev``, which patsy uses)."""
    from scipy.interpolate import BSpline, PPoly

    knots = np.asarray(knots, dtype=np.float64)
    n = len(knots) - degree - 1
    starts = np.unique(knots)[:-1]
    pieces = [np.zeros((max(degree, 1) + 1, n)) for _ in starts]
    for i in range(n):
        pp = PPoly.from_spline(BSpline(knots, np.eye(n)[i], degree))
        for m in range(len(pp.x) - 1):
            if pp.x[m + 1] > pp.x[m]:
                j = int(np.searchsorted(starts, pp.x[m]))
                pieces[j][:degree + 1, i] = pp.c[::-1, m]
    return list(zip(starts.tolist(), pieces))


def evaluate(spec: Any, backend: Any) -> Any:
    """Every design column of ``spec`` (a :class:`trainer.formula.FormulaSpec`) with ``backend``
    (numpy arrays, or ONNX node names)."""
    values = []
    for f in spec.factors:
        if f["kind"] == "numeric":  # a list of its columns (poly() and bs() give several)
            value = expression(parse_code(f["eval"]), f, backend, top=True)
            values.append(value if isinstance(value, list) else [value])
        else:
            values.append(backend.levels(f["source"], f["levels"]))
    columns = []
    for c in spec.columns:
        term = None
        for i, contrast, *at in c["parts"]:
            part = values[i][at[0] if at else 0] if contrast is None else \
                backend.contrast(values[i], contrast)
            term = part if term is None else backend.binop("Mul", term, part)
        columns.append(term)
    return backend.concat(columns)


def expression(node: ast.AST, factor: dict[str, Any], b: Any, *, top: bool = False) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) \
            and not isinstance(node.value, bool):
        return b.const(float(node.value))
    if isinstance(node, ast.Name):
        return b.input(node.id)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        if isinstance(node.op, ast.Pow) and not isinstance(node.right, ast.Constant):
            raise refusal(f"a power by an expression in {factor['code']}")
        return b.binop(_OPS[type(node.op)], expression(node.left, factor, b),
                       expression(node.right, factor, b))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = expression(node.operand, factor, b)
        return b.binop("Mul", b.const(-1.0), inner) if isinstance(node.op, ast.USub) else inner
    if isinstance(node, ast.Call) and len(node.args) == 1:
        name = dotted_name(node.func)
        if name == "I":
            return expression(node.args[0], factor, b)
        if name in FUNCTIONS and not node.keywords:
            return b.func(FUNCTIONS[name], expression(node.args[0], factor, b))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
            and node.func.attr == "transform" and node.args:
        state = factor["transforms"][dotted_name(node.func.value)]
        if state["kind"] in MULTI_COLUMN and not top:
            raise refusal(f"{ast.unparse(node)} inside an expression in {factor['code']}")
        args = [ast.literal_eval(a) for a in node.args[1:]]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
        return _transform(state, expression(node.args[0], factor, b), args, kwargs, b)
    raise refusal(f"{ast.unparse(node)} in {factor['code']}")


def _transform(state: dict[str, Any], x: Any, args: list[Any], kwargs: dict[str, Any],
               b: Any) -> Any:
    """``center(x)``: x − mean; ``standardize(x)``: (x − mean) / √(M2 / (n − ddof));
    ``poly(x, degree)`` and ``bs(x, ...)``: their columns (a list)."""
    if state["kind"] == "poly":
        degree = args[0] if args else kwargs.get("degree", 1)
        if args[1:2] == [True] or kwargs.get("raw", False):
            powers = [x]
            for _ in range(degree - 1):
                powers.append(b.binop("Mul", powers[-1], x))
            return powers
        return poly_columns(x, state["alpha"], state["norms2"], degree, b)
    if state["kind"] == "bs":
        knots = state["knots"]
        columns = b.bspline(x, _bspline_pieces(knots, state["degree"]), knots[0], knots[-1])
        include = kwargs.get("include_intercept", args[3] if len(args) > 3 else False)
        return columns if include else columns[1:]
    if state["kind"] == "center":
        return b.binop("Sub", x, b.const(state["mean"]))
    if kwargs.get("center", True):
        x = b.binop("Sub", x, b.const(state["mean"]))
    if kwargs.get("rescale", True):
        x = b.binop("Div", x, b.const(math.sqrt(state["m2"] / (state["n"]
                                                                - kwargs.get("ddof", 0)))))
    return x


class NumpyBackend:
    def __init__(self, data: Mapping[str, np.ndarray],
                 fills: Mapping[str, float] | None = None, lenient: set[str] = frozenset()
                 ) -> None:
        self.data, self.fills, self.lenient = data, fills or {}, lenient

    def input(self, name: str) -> np.ndarray:
        x = np.asarray(self.data[name], dtype=np.float64)
        return np.where(np.isnan(x), self.fills[name], x) if name in self.fills else x

    def const(self, v: float) -> float:
        return v

    def binop(self, op: str, a: Any, c: Any) -> Any:
        with np.errstate(all="ignore"):
            return {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply,
                    "Div": np.divide, "Pow": np.power}[op](a, c)

    def func(self, name: str, x: Any) -> Any:
        with np.errstate(all="ignore"):
            return _NUMPY[name](x)

    def levels(self, name: str, levels: list[str]) -> np.ndarray:
        from serve.core.columns import level_text

        index = {lv: i for i, lv in enumerate(levels)}
        codes = np.array([index.get(level_text(v), -1) for v in self.data[name]])
        return codes, 0.0 if name in self.lenient else np.nan  # what an unseen level codes as

    def contrast(self, levels: tuple[np.ndarray, float], contrast: list[float]) -> np.ndarray:
        codes, unseen = levels
        table = np.append(np.asarray(contrast, dtype=np.float64), unseen)  # -1: unseen
        return table[codes]

    def bspline(self, x: Any, pieces: list[tuple[float, np.ndarray]], lo: float,
                hi: float) -> list[np.ndarray]:
        """Each basis column: the polynomial of x's knot interval, NaN outside [lo, hi]."""
        x = np.asarray(x, dtype=np.float64)
        starts = np.array([a for a, _ in pieces])
        where = (x[:, None] >= starts[None, 1:]).sum(axis=1)
        out = np.full((len(x), pieces[0][1].shape[1]), np.nan)
        for j, (a, C) in enumerate(pieces):
            mine = where == j
            out[mine] = np.vander(x[mine] - a, len(C), increasing=True) @ C
        out[~((x >= lo) & (x <= hi))] = np.nan
        return [out[:, i] for i in range(out.shape[1])]

    def concat(self, columns: list[Any]) -> np.ndarray:
        n = next((len(c) for c in columns if isinstance(c, np.ndarray)), 0)
        return np.column_stack([np.broadcast_to(np.asarray(c, dtype=np.float64), (n,))
                                for c in columns]) if columns else np.empty((n, 0))


def formula_nodes(spec: Any, *, elem: int, np_dtype: Any,
                  const: Callable[[str, np.ndarray], str], node: Callable[..., str],
                  cells: Mapping[str, str] | None = None) -> tuple[str, list[str]]:
    """The design matrix of ``spec`` as ONNX nodes over raw-column inputs (``node`` and
    ``const`` add to the caller's graph; ``cells``: a categorical input's node to read instead,
    its NA tokens made blanks): the design's name, and the per-row penalties (NaN for a level
    not seen in training) to add to the prediction."""
    backend = _OnnxBackend(elem, np_dtype, const, node, spec.fills, cells,
                           lenient={s.name for s in spec.column_specs()
                                    if s.kind == "categorical" and s.unknown == "reference"})
    return evaluate(spec, backend), backend.penalties


class _OnnxBackend:
    def __init__(self, elem: int, np_dtype: Any, const: Callable, node: Callable,
                 fills: Mapping[str, float] | None = None,
                 cells: Mapping[str, str] | None = None, lenient: set[str] = frozenset()
                 ) -> None:
        self.elem, self.dtype, self._const, self._node = elem, np_dtype, const, node
        self._cells = cells or {}
        self._lenient = lenient  # --unknown reference: an unseen level codes as all zeros
        self.penalties: list[str] = []
        self.n = 0
        self._levels: dict[str, str] = {}
        self._fills, self._filled = fills or {}, {}

    def _name(self, what: str) -> str:
        self.n += 1
        return f"f{self.n}/{what}"

    def input(self, name: str) -> str:
        """The raw column; with --impute, Where(IsNaN(x), fill, x) (built once per column)."""
        if name not in self._fills:
            return name
        if name not in self._filled:
            self._filled[name] = self._node("Where", [
                self._node("IsNaN", [name], self._name("isnan")),
                self.const(self._fills[name]), name], self._name("filled"))
        return self._filled[name]

    def const(self, v: float) -> str:
        return self._const(self._name("c"), np.full((1, 1), v, self.dtype))

    def binop(self, op: str, a: str, c: str) -> str:
        return self._node(op, [a, c], self._name(op.lower()))

    def func(self, name: str, x: str) -> str:
        if name == "Log1p":
            return self._node("Log", [self.binop("Add", x, self.const(1.0))],
                              self._name("log1p"))
        return self._node(name, [x], self._name(name.lower()))

    def levels(self, name: str, levels: list[str]) -> str:
        """The column's one-hot over its training levels ([batch, L]), and a NaN penalty for a
        row whose level is none of them."""
        if name in self._levels:
            return self._levels[name]
        known = self._const(self._name("levels"), np.array([list(levels)], dtype=object))
        eq = self._node("Equal", [self._cells.get(name, name), known], self._name("equal"))
        onehot = self._node("Cast", [eq], self._name("onehot"), to=self.elem)
        if name in self._lenient:  # all zeros: the reference level's coding
            self._levels[name] = onehot
            return onehot
        count = self._node("MatMul", [onehot, self._const(self._name("ones"), np.ones(
            (len(levels), 1), self.dtype))], self._name("count"))
        unknown = self._node("Equal", [count, self._const(self._name("zero"), np.zeros(
            (1, 1), self.dtype))], self._name("unknown"))
        self.penalties.append(self._node("Where", [unknown, self._const(
            self._name("nan"), np.full((1, 1), np.nan, self.dtype)), self._const(
                self._name("no"), np.zeros((1, 1), self.dtype))], self._name("penalty")))
        self._levels[name] = onehot
        return onehot

    def bspline(self, x: str, pieces: list[tuple[float, np.ndarray]], lo: float,
                hi: float) -> list[str]:
        """1. s_j = x ≥ start_j (j ≥ 1); the interval's indicator is s_j − s_j+1;
        2. per interval, its cubic in u = x − start: Gemm([u, u², u³], C[1:], C[0]);
        3. their sum, NaN outside [lo, hi] (Less, Greater, Where); one MatMul per column."""
        steps = [self._node("Cast", [self._node("GreaterOrEqual", [x, self.const(a)],
                                                 self._name("ge"))], self._name("step"),
                            to=self.elem) for a, _ in pieces[1:]]
        total = None
        for j, (a, C) in enumerate(pieces):
            u = self.binop("Sub", x, self.const(a))
            powers = [u]
            for _ in range(len(C) - 2):
                powers.append(self.binop("Mul", powers[-1], u))
            U = self.concat(powers)
            piece = self._node("Gemm", [U, self._const(self._name("coef"), C[1:].astype(
                self.dtype)), self._const(self._name("c0"), C[0].astype(self.dtype))],
                self._name("piece"))
            if len(pieces) > 1:
                if j == 0:
                    inside = self.binop("Sub", self.const(1.0), steps[0])
                elif j == len(pieces) - 1:
                    inside = steps[j - 1]
                else:
                    inside = self.binop("Sub", steps[j - 1], steps[j])
                piece = self.binop("Mul", piece, inside)
            total = piece if total is None else self.binop("Add", total, piece)
        nan, zero = self.const(math.nan), self.const(0.0)
        below = self._node("Less", [x, self.const(lo)], self._name("below"))
        above = self._node("Greater", [x, self.const(hi)], self._name("above"))
        outside = self._node("Where", [below, nan, self._node("Where", [above, nan, zero],
                                                               self._name("over"))],
                             self._name("outside"))
        total = self.binop("Add", total, outside)
        n = pieces[0][1].shape[1]
        return [self._node("MatMul", [total, self._const(self._name("basis"), np.eye(
            n, dtype=self.dtype)[:, [i]])], self._name("column")) for i in range(n)]

    def contrast(self, onehot: str, contrast: list[float]) -> str:
        return self._node("MatMul", [onehot, self._const(self._name("contrast"), np.asarray(
            contrast, dtype=self.dtype).reshape(-1, 1))], self._name("coded"))

    def concat(self, columns: list[str]) -> str:
        return self._node("Concat", columns, self._name("design"), axis=1) \
            if len(columns) > 1 else columns[0]
