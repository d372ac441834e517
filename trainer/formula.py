"""Formulas (``linreg-train DATA --formula 'y ~ a + C(city) + a:b + I(a**2) + np.log(b)'``),
parsed by patsy (statsmodels' own formula library), compiled into the exported model.

1. patsy reads the formula on the training rows and gives the design's structure: its factors
   (each a Python expression over raw columns, with the state a stateful transform learned:
   ``center``'s mean, ``standardize``'s mean and spread), the contrast matrix of each
   categorical factor in each term, and the columns, named as statsmodels names them.
2. :class:`FormulaSpec` holds that structure as plain JSON (``model.json``'s ``formula``): per
   factor its expression and state, per column the factors it multiplies (a numeric factor's
   value, or a categorical factor's contrast row for the cell's level).
3. One compiler walks each factor's expression (Python's ``ast``) with two backends: numpy
   (the design at training, checked against patsy's own matrix) and ONNX (the same arithmetic
   as graph nodes, :func:`formula_graph`), so every consumer feeds raw columns and gets the
   formula's answer. Supported: numbers and the four operations, powers by a constant,
   ``I()``, ``np.log``, ``np.log1p``, ``np.exp``, ``np.sqrt``, ``np.abs``, ``center()``,
   ``standardize()``/``scale()``, ``poly(x, degree)`` (orthogonal polynomials, formulaic's and
   R's three-term recurrence; ``raw=True``: powers), ``bs(x, df=..)`` (patsy's B-splines: each
   knot interval's cubic in the graph, a value outside the training range NaN), ``C(x)`` with
   patsy's codings (``Treatment(reference=...)``, ``Sum``, ``Diff``, ``Helmert``, ``Poly``:
   each a contrast matrix) and interactions of any of these, and a response that is a function
   of columns (``np.log(y) ~ ...``: the model predicts on that scale); anything else is refused
   in one line naming it.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from serve.core.columns import ColumnSpec, level_text
from trainer.config import TrainingError

FUNCTIONS = {"np.log": "Log", "np.log1p": "Log1p", "np.exp": "Exp", "np.sqrt": "Sqrt",
             "np.abs": "Abs", "numpy.log": "Log", "numpy.exp": "Exp", "numpy.sqrt": "Sqrt"}
_NUMPY = {"Log": np.log, "Log1p": np.log1p, "Exp": np.exp, "Sqrt": np.sqrt, "Abs": np.abs}
CODINGS = ("Treatment", "T", "Sum", "Diff", "Helmert", "Poly")  # patsy's: contrast matrices
_OPS = {ast.Add: "Add", ast.Sub: "Sub", ast.Mult: "Mul", ast.Div: "Div", ast.Pow: "Pow"}


TRANSFORMS = ("I", "center", "standardize", "scale", "poly", "bs")
_MULTI = ("poly", "bs")  # transforms that give several columns


def _refuse(what: str) -> TrainingError:
    return TrainingError(f"--formula: {what} is not supported; use numeric columns, C(column), "
                         "interactions (a:b, a*b), I(...) arithmetic, np.log, np.log1p, np.exp, "
                         "np.sqrt, np.abs, center(), standardize(), poly() or bs()")


class Poly:
    """``poly(x, degree=1, raw=False)``: orthonormal polynomials of x as formulaic (and R's
    ``poly``) computes them, by the monic three-term recurrence P₀ = 1, P₁ = x − α₀,
    Pₖ₊₁ = (x − αₖ)Pₖ − (nₖ/nₖ₋₁)Pₖ₋₁ with αₖ = Σx·Pₖ²/nₖ and nₖ = ΣPₖ² learned on the
    training rows, each Pₖ divided by √nₖ; ``raw=True`` gives x, x², ... A patsy stateful
    transform (patsy has none of its own)."""

    def __init__(self) -> None:
        self._xs: list[np.ndarray] = []
        self.alpha: list[float] = []
        self.norms2: list[float] = []

    def memorize_chunk(self, x: Any, degree: int = 1, raw: bool = False) -> None:
        self._xs.append(np.asarray(x, dtype=np.float64).ravel())

    def memorize_finish(self) -> None:
        self._x = np.concatenate(self._xs) if self._xs else np.empty(0)
        del self._xs

    def transform(self, x: Any, degree: int = 1, raw: bool = False) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64).ravel()
        if raw:
            return np.column_stack([x ** k for k in range(1, degree + 1)])
        if not self.norms2:  # learn α and n on the training rows, as formulaic does
            t = self._x
            P = [np.ones_like(t)]
            for k in range(degree + 1):
                self.norms2.append(float(np.sum(P[k] ** 2)))
                if k == degree:
                    break
                self.alpha.append(float(np.sum(t * P[k] ** 2) / self.norms2[k]))
                nxt = (t - self.alpha[k]) * P[k]
                if k >= 1:
                    nxt = nxt - self.norms2[k] / self.norms2[k - 1] * P[k - 1]
                P.append(nxt)
            del self._x
        return np.column_stack(_poly_columns(x, self.alpha, self.norms2, degree, _NumpyBackend({})))


def _poly_columns(x: Any, alpha: Sequence[float], norms2: Sequence[float], degree: int,
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


@dataclass
class FormulaSpec:
    """A formula's design, learned at training (JSON: :meth:`to_json`)."""

    formula: str
    response: str
    intercept: bool
    # {"code", "kind", "eval", "transforms", "width"} or {"code", "kind", "source", "levels"}
    factors: list[dict[str, Any]]
    # {"name", "parts": [[factor, contrast or None, its column], ...], "term"}
    columns: list[dict[str, Any]]
    ranges: dict[str, list[float]] | None = None  # numeric inputs' [min, max] in training
    fills: dict[str, float] | None = None  # --impute: a blank number's value, per raw column
    unknown: str = "error"  # --unknown: an unseen level is an error, or its reference level

    def to_json(self) -> dict[str, Any]:
        return {"formula": self.formula, "response": self.response, "intercept": self.intercept,
                "factors": self.factors, "columns": self.columns, "ranges": self.ranges,
                "fills": self.fills, "unknown": self.unknown}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> FormulaSpec:
        return cls(d["formula"], d["response"], d["intercept"], list(d["factors"]),
                   list(d["columns"]), d.get("ranges"), d.get("fills"),
                   d.get("unknown", "error"))

    def references(self) -> dict[str, str | None]:
        """Each categorical column's reference level: the one level every contrast it is used
        with codes as all zeros (Treatment coding), so that an all-zero one-hot, an unseen
        level in the graph, predicts it; None for a coding without one (Sum, every level)."""
        out: dict[str, str | None] = {}
        for i, f in enumerate(self.factors):
            if f["kind"] != "categorical":
                continue
            uses = [np.asarray(contrast) for c in self.columns for j, contrast, *_ in c["parts"]
                    if j == i and contrast is not None]
            zero = [lv for k, lv in enumerate(f["levels"]) if uses and
                    all(u[k] == 0 for u in uses)]
            ref = zero[0] if len(zero) == 1 else None
            out[f["source"]] = ref if out.get(f["source"], ref) == ref else None
        return out

    def check_unknown(self) -> None:
        """--unknown reference needs a reference level in every categorical column."""
        if self.unknown != "reference":
            return
        for name, ref in self.references().items():
            if ref is None:
                raise TrainingError(f"--unknown reference: column {name!r} has no reference "
                                    "level in this formula (its coding gives no level all "
                                    "zeros); use Treatment coding, C(" + name + "), or "
                                    "--unknown error")

    @property
    def names(self) -> list[str]:
        """The design's columns (statsmodels' names), the intercept left out."""
        return [c["name"] for c in self.columns]

    def inputs(self) -> list[str]:
        """The raw columns the formula reads, in the order they first appear."""
        seen: dict[str, None] = {}
        for f in self.factors:
            for name in (names_in(f["eval"]) if f["kind"] == "numeric" else [f["source"]]):
                seen.setdefault(name)
        return list(seen)

    def column_specs(self) -> list[ColumnSpec]:
        """The raw columns as the runtime's contract: numbers (with --impute's fill, if any)
        and categorical columns (their levels; a level not seen in training is refused)."""
        levels = {f["source"]: f["levels"] for f in self.factors if f["kind"] == "categorical"}
        fills, refs = self.fills or {}, self.references()
        return [ColumnSpec(n, "categorical", levels=tuple(levels[n]), reference=refs[n],
                           unknown=self.unknown if refs[n] is not None else "error")
                if n in levels else ColumnSpec(n, "numeric", fill=fills.get(n))
                for n in self.inputs()]

    def design(self, data: Mapping[str, np.ndarray]) -> np.ndarray:
        """The float64 design matrix (no intercept column) of raw columns ``data`` (a blank
        number filled as at training)."""
        return evaluate(self, _NumpyBackend(data, self.fills, {
            s.name for s in self.column_specs() if s.kind == "categorical"
            and s.unknown == "reference"}))

    def response_values(self, data: Mapping[str, np.ndarray]) -> np.ndarray:
        """The response of raw columns ``data``: a column, or a function of columns
        (``np.log(y)``: the model then predicts on that scale)."""
        if self.response in data:
            return np.asarray(data[self.response], dtype=np.float64)
        node = _parse(self.response)
        return np.asarray(_expr(node, {"code": self.response, "transforms": {}},
                                _NumpyBackend(data)), dtype=np.float64)


def raw_of(table: Any, specs: Sequence[ColumnSpec], *, source: str) -> dict[str, np.ndarray]:
    """An Arrow table's raw columns as the formula reads them: numbers (NaN for a blank) or
    level texts ("" for a blank), each as its spec says."""
    from trainer.encode import raw_columns

    return raw_columns(table.select([s.name for s in specs]), [s.name for s in specs],
                       categorical=[s.name for s in specs if s.kind == "categorical"],
                       source=source)


def formula_of(manifest: Mapping[str, Any]) -> FormulaSpec | None:
    """The formula of a trained model's manifest, or None."""
    value = manifest.get("formula")
    return None if value is None else FormulaSpec.from_json(value)


# ------------------------------------------------------------------------ 1.-2. from patsy

def learn(formula: str, data: Mapping[str, np.ndarray]) -> tuple[FormulaSpec, np.ndarray,
                                                                  np.ndarray]:
    """patsy's design of ``formula`` on the training rows ``data`` (raw columns by name), as a
    :class:`FormulaSpec`; with the response and the design patsy built (for the check)."""
    import patsy

    desc = _described(formula, set(data))
    try:
        y, X = patsy.dmatrices(formula, dict(data), NA_action="raise", return_type="matrix",
                               eval_env=_environment())
    except patsy.PatsyError as e:
        raise TrainingError(f"--formula {formula!r}: {str(e).splitlines()[0]}") from None
    spec = _spec_of(formula, desc, X.design_info)
    X = np.asarray(X, dtype=np.float64)
    return spec, np.asarray(y, dtype=np.float64), X[:, 1:] if spec.intercept else X


def learn_streamed(formula: str, chunks: Callable[[], Iterator[dict[str, np.ndarray]]],
                   columns: Sequence[str]) -> tuple[FormulaSpec, Any]:
    """:func:`learn` over training rows given chunk by chunk (``chunks()`` starts a pass; patsy
    takes as many as its transforms need: the levels, then the stateful transforms' state);
    ``columns`` are the raw columns. Returns the spec and patsy's design info (to check the
    compiled design against patsy's on a chunk)."""
    import patsy

    desc = _described(formula, set(columns))
    try:
        _, info = patsy.incr_dbuilders(formula, chunks, eval_env=_environment(),
                                       NA_action="raise")
    except patsy.PatsyError as e:
        raise TrainingError(f"--formula {formula!r}: {str(e).splitlines()[0]}") from None
    return _spec_of(formula, desc, info), info


def _described(formula: str, columns: set[str]) -> Any:
    """patsy's parse of ``formula``, every term checked before any data is read."""
    import patsy

    try:
        desc = patsy.ModelDesc.from_formula(formula)
    except patsy.PatsyError as e:
        raise TrainingError(f"--formula {formula!r}: {str(e).splitlines()[0]}") from None
    if len(desc.lhs_termlist) != 1 or len(desc.lhs_termlist[0].factors) != 1:
        raise TrainingError(f"--formula {formula!r}: give one response on the left, e.g. "
                            "'y ~ a + b'")
    response = desc.lhs_termlist[0].factors[0].code
    if response not in columns:  # a transformed response: numbers of the raw columns
        _check_code(response)
        if any(_dotted(n.func) in ("center", "standardize", "scale", "C", *_MULTI)
               for n in ast.walk(_parse(response)) if isinstance(n, ast.Call)):
            raise _refuse(f"the response {response}: a response is a column or a function of "
                          "columns")
    for term in desc.rhs_termlist:
        for factor in term.factors:
            _check_code(factor.code)
    return desc


def _spec_of(formula: str, desc: Any, info: Any) -> FormulaSpec:
    """patsy's design info as a :class:`FormulaSpec`: per factor its expression and learned
    state (or levels), per column its factors' parts, its name and its term."""
    factors, index = [], {}
    for factor, fi in info.factor_infos.items():
        index[factor] = len(factors)
        if fi.type == "categorical":
            factors.append({"code": factor.code, "kind": "categorical",
                            "source": _categorical_source(factor.code),
                            "levels": [level_text(c) for c in fi.categories]})
            continue
        if fi.num_columns != 1 and _dotted(getattr(_parse(factor.code),
                                                   "func", None)) not in _MULTI:
            raise _refuse(f"{factor.code} ({fi.num_columns} columns)")
        factors.append({"code": factor.code, "kind": "numeric", "eval": fi.state["eval_code"],
                        "transforms": {k: _transform_state(v) for k, v in
                                       fi.state.get("transforms", {}).items()},
                        "width": fi.num_columns})
    columns, intercept = [], False
    for term, subterms in info.term_codings.items():
        if not term.factors:
            intercept = True
            continue
        at = info.term_name_slices[term.name()].start
        for sub in subterms:
            widths = [sub.contrast_matrices[f].matrix.shape[1] if f in sub.contrast_matrices
                      else info.factor_infos[f].num_columns for f in sub.factors]
            for combo in _combinations(widths):  # the left-most factor varies fastest (patsy)
                parts = []
                for f, j in zip(sub.factors, combo):
                    if f in sub.contrast_matrices:
                        parts.append([index[f], sub.contrast_matrices[f].matrix[:, j].tolist()])
                    else:
                        parts.append([index[f], None, j])
                columns.append({"name": _plain_numbers(info.column_names[at]),
                                "parts": parts, "term": _plain_numbers(term.name())})
                at += 1
    response = desc.lhs_termlist[0].factors[0].code
    return FormulaSpec(formula, response, intercept, factors, columns)


def needed_columns(formula: str, *, response_only: bool = False) -> list[str]:
    """The raw columns ``formula`` reads, response first (before any data is read); or only
    the response's."""
    import patsy

    try:
        desc = patsy.ModelDesc.from_formula(formula)
    except patsy.PatsyError as e:
        raise TrainingError(f"--formula {formula!r}: {str(e).splitlines()[0]}") from None
    for term in desc.rhs_termlist:
        for factor in term.factors:
            _check_code(factor.code)
    names: dict[str, None] = {}
    for term in [*desc.lhs_termlist, *([] if response_only else desc.rhs_termlist)]:
        for factor in term.factors:
            for name in names_in(factor.code):
                if name not in CODINGS:
                    names.setdefault(name)
    return list(names)


def _plain_numbers(name: str) -> str:
    """A column name as statsmodels shows it (pandas' columns give patsy Python numbers):
    ``C(origin)[T.2]``, not numpy 2's repr ``C(origin)[T.np.int64(2)]``."""
    import re

    return re.sub(r"np\.(?:u?int|float)\d+\(([^()]*)\)", r"\1", name)


def _combinations(widths: Sequence[int]):
    import itertools

    for combo in itertools.product(*[range(n) for n in reversed(widths)]):
        yield combo[::-1]


def _categorical_source(code: str) -> str:
    """The raw column of a categorical factor: ``city``, ``C(city)`` or ``C(city, Treatment(
    reference='Paris'))``; other codings and expressions are refused."""
    node = _parse(code)
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Call) and _dotted(node.func) == "C" and node.args and \
            isinstance(node.args[0], ast.Name):
        for extra in [*node.args[1:], *(k.value for k in node.keywords)]:
            name = _dotted(extra.func) if isinstance(extra, ast.Call) else _dotted(extra)
            if name not in CODINGS:
                raise _refuse(f"{code} (a coding other than patsy's {', '.join(CODINGS)})")
        return node.args[0].id
    raise _refuse(code)


def _parse(code: str) -> ast.expr:
    """A term's Python expression, or a one-line refusal of text that is not one."""
    try:
        return ast.parse(code, mode="eval").body
    except SyntaxError:
        raise TrainingError(f"--formula: {code!r} is not a Python expression; write terms such "
                            "as a, C(city), a:b, I(a ** 2), np.log(b)") from None


def _check_code(code: str) -> None:
    """Refuse, before patsy runs, what the compiler cannot carry into the graph."""
    node = _parse(code)
    if isinstance(node, ast.Call) and _dotted(node.func) == "C":
        _categorical_source(code)
        return
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call):
            name = _dotted(sub.func)
            if name not in FUNCTIONS and name not in TRANSFORMS:
                raise _refuse(f"{name}() in {code}")
            if name in _MULTI and sub is not node:
                raise TrainingError(f"--formula: {name}() inside an expression ({code}) is not "
                                    f"supported; give {name}() a term of its own")


def _environment() -> Any:
    """What a formula's expressions see: numpy as ``np``, and :class:`Poly` as ``poly`` (patsy
    adds its own builtins: ``C``, ``I``, ``center``, ``standardize``, ``bs``, ...)."""
    import patsy

    return patsy.EvalEnvironment([{"np": np, "numpy": np,
                                   "poly": patsy.stateful_transform(Poly)}])


def _transform_state(obj: Any) -> dict[str, Any]:
    """A patsy stateful transform's learned state, as plain numbers."""
    kind = type(obj).__name__
    if kind == "Poly":
        return {"kind": "poly", "alpha": list(obj.alpha), "norms2": list(obj.norms2)}
    if kind == "BS":
        return {"kind": "bs", "knots": np.asarray(obj._all_knots, dtype=np.float64).tolist(),
                "degree": int(obj._degree)}
    if kind == "Center":
        return {"kind": "center", "mean": float(np.asarray(obj._sum, dtype=np.float64)[0]
                                                / obj._count)}
    if kind == "Standardize":
        return {"kind": "standardize", "n": int(obj.current_n),
                "mean": float(np.asarray(obj.current_mean, dtype=np.float64)[0]),
                "m2": float(np.asarray(obj.current_M2, dtype=np.float64)[0])}
    raise _refuse(f"the transform {kind}")


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return None if head is None else f"{head}.{node.attr}"
    return None


def names_in(code: str) -> list[str]:
    """The raw columns an expression reads (its free names but numpy and patsy's objects)."""
    tree = _parse(code)
    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    out = [node.id for node in ast.walk(tree) if isinstance(node, ast.Name)
           and id(node) not in called and node.id not in ("np", "numpy")
           and not node.id.startswith("_patsy_")]
    return list(dict.fromkeys(out))


# ------------------------------------------------------------------------ 3. the compiler

def evaluate(spec: FormulaSpec, backend: Any) -> Any:
    """Every design column of ``spec`` with ``backend`` (numpy arrays, or ONNX node names)."""
    values = []
    for f in spec.factors:
        if f["kind"] == "numeric":  # a list of its columns (poly() and bs() give several)
            value = _expr(_parse(f["eval"]), f, backend, top=True)
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


def _expr(node: ast.AST, factor: dict[str, Any], b: Any, *, top: bool = False) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) \
            and not isinstance(node.value, bool):
        return b.const(float(node.value))
    if isinstance(node, ast.Name):
        return b.input(node.id)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        if isinstance(node.op, ast.Pow) and not isinstance(node.right, ast.Constant):
            raise _refuse(f"a power by an expression in {factor['code']}")
        return b.binop(_OPS[type(node.op)], _expr(node.left, factor, b),
                       _expr(node.right, factor, b))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = _expr(node.operand, factor, b)
        return b.binop("Mul", b.const(-1.0), inner) if isinstance(node.op, ast.USub) else inner
    if isinstance(node, ast.Call) and len(node.args) == 1:
        name = _dotted(node.func)
        if name == "I":
            return _expr(node.args[0], factor, b)
        if name in FUNCTIONS and not node.keywords:
            return b.func(FUNCTIONS[name], _expr(node.args[0], factor, b))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
            and node.func.attr == "transform" and node.args:
        state = factor["transforms"][_dotted(node.func.value)]
        if state["kind"] in _MULTI and not top:
            raise _refuse(f"{ast.unparse(node)} inside an expression in {factor['code']}")
        args = [ast.literal_eval(a) for a in node.args[1:]]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
        return _transform(state, _expr(node.args[0], factor, b), args, kwargs, b)
    raise _refuse(f"{ast.unparse(node)} in {factor['code']}")


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
        return _poly_columns(x, state["alpha"], state["norms2"], degree, b)
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


class _NumpyBackend:
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


def formula_nodes(spec: FormulaSpec, *, elem: int, np_dtype: Any,
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
