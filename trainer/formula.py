"""Formulas (``linreg-train DATA --formula 'y ~ a + C(city) + a:b + I(a**2) + np.log(b)'``),
parsed by patsy (statsmodels' own formula library), compiled into the exported model.

1. patsy reads the formula on the training rows (in memory, or chunk by chunk when streamed)
   and gives the design's structure: its factors (each a Python expression over raw columns,
   with the state a stateful transform learned: ``center``'s mean, ``standardize``'s mean and
   spread, ``bs``'s knots, ``poly``'s recurrence), the contrast matrix of each categorical
   factor in each term, and the columns, named as statsmodels names them.
2. :class:`FormulaSpec` holds that structure as plain JSON (``model.json``'s ``formula``): per
   factor its expression and state, per column the factors it multiplies (a numeric factor's
   column, or a categorical factor's contrast row for the cell's level) and its term; with the
   --impute fills and the --unknown policy.
3. :mod:`trainer.formula_graph` compiles it, to numpy (the training design, checked against
   patsy's own matrix) and to ONNX nodes inside model.onnx. Terms outside what it compiles are
   refused here, before patsy runs, in one line naming them.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from serve.core.columns import ColumnSpec, level_text
from trainer.config import TrainingError
from trainer.formula_graph import (
    CODINGS,
    FUNCTIONS,
    MULTI_COLUMN,
    NumpyBackend,
    dotted_name,
    evaluate,
    expression,
    parse_code,
    poly_columns,
    refusal,
)

TRANSFORMS = ("I", "center", "standardize", "scale", "poly", "bs")


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
        return np.column_stack(poly_columns(x, self.alpha, self.norms2, degree, NumpyBackend({})))


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
        return evaluate(self, NumpyBackend(data, self.fills, {
            s.name for s in self.column_specs() if s.kind == "categorical"
            and s.unknown == "reference"}))

    def response_values(self, data: Mapping[str, np.ndarray]) -> np.ndarray:
        """The response of raw columns ``data``: a column, or a function of columns
        (``np.log(y)``: the model then predicts on that scale)."""
        if self.response in data:
            return np.asarray(data[self.response], dtype=np.float64)
        node = parse_code(self.response)
        return np.asarray(expression(node, {"code": self.response, "transforms": {}},
                                NumpyBackend(data)), dtype=np.float64)


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
        if any(dotted_name(n.func) in ("center", "standardize", "scale", "C", *MULTI_COLUMN)
               for n in ast.walk(parse_code(response)) if isinstance(n, ast.Call)):
            raise refusal(f"the response {response}: a response is a column or a function of "
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
        if fi.num_columns != 1 and dotted_name(getattr(parse_code(factor.code),
                                                   "func", None)) not in MULTI_COLUMN:
            raise refusal(f"{factor.code} ({fi.num_columns} columns)")
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
    node = parse_code(code)
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Call) and dotted_name(node.func) == "C" and node.args and \
            isinstance(node.args[0], ast.Name):
        for extra in [*node.args[1:], *(k.value for k in node.keywords)]:
            name = dotted_name(extra.func) if isinstance(extra, ast.Call) else dotted_name(extra)
            if name not in CODINGS:
                raise refusal(f"{code} (a coding other than patsy's {', '.join(CODINGS)})")
        return node.args[0].id
    raise refusal(code)


def _check_code(code: str) -> None:
    """Refuse, before patsy runs, what the compiler cannot carry into the graph."""
    node = parse_code(code)
    if isinstance(node, ast.Call) and dotted_name(node.func) == "C":
        _categorical_source(code)
        return
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call):
            name = dotted_name(sub.func)
            if name not in FUNCTIONS and name not in TRANSFORMS:
                raise refusal(f"{name}() in {code}")
            if name in MULTI_COLUMN and sub is not node:
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
    raise refusal(f"the transform {kind}")


def names_in(code: str) -> list[str]:
    """The raw columns an expression reads (its free names but numpy and patsy's objects)."""
    tree = parse_code(code)
    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    out = [node.id for node in ast.walk(tree) if isinstance(node, ast.Name)
           and id(node) not in called and node.id not in ("np", "numpy")
           and not node.id.startswith("_patsy_")]
    return list(dict.fromkeys(out))
