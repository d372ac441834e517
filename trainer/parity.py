"""Parity: every exported file is checked against the trained model before it is kept. The
rows (held-out rows from the manifest, else seeded synthetic rows, plus one row and a large
batch; raw columns for a tabular model), each consumer's predictions against torch eager, the
intervals against the statistics, and the figures the manifest records."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from serve.core.columns import MISSING, ColumnSpec
from serve.core.errors import LinregError, first_line
from serve.core.manifest import sha256_file
from serve.core.tables import to_matrix
from trainer.encode import design_matrix, manifest_na_values, raw_columns
from trainer.files import read_table
from trainer.onnx_tabular import INTERVAL_OUTPUTS, Intervals

# Parity tolerance, relative to the largest |prediction| (and at least 1): float32 Gemm sums in
# another order than torch's addmm, so only the last bits may differ.
TOLERANCE = {"float32": 1e-5, "float64": 1e-12}
LARGE_BATCH = 100_000


class ExportError(LinregError):
    """An export could not be produced, or does not agree with the trained model."""


@contextlib.contextmanager
def quiet_torch() -> Iterator[None]:
    """Keep the exporters' deprecation warnings and log lines from our users."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo",
                                              "torch.fx", "onnxscript")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def parity_rows(folder: Path, manifest: dict[str, Any]) -> list[np.ndarray]:
    """Rows to compare on: held-out rows if the training file is still there and unchanged,
    else seeded synthetic rows at the data's scale; plus 1 row and a large batch."""
    n = manifest["model"]["n_features"]
    dtype = np.dtype(manifest["model"]["dtype"])
    rng = np.random.default_rng(0)
    norm = manifest.get("normalization") or {}
    mean = np.asarray(norm.get("mean", np.zeros(n)))
    scale = np.asarray(norm.get("scale", np.full(n, 5.0)))
    rows = [held_out_rows(manifest)]
    if rows[0] is None:
        rows[0] = mean + scale * rng.standard_normal((256, n))
    rows.append(rows[0][:1])
    rows.append(mean + scale * rng.standard_normal((LARGE_BATCH, n)))
    return [np.ascontiguousarray(r, dtype=dtype) for r in rows]


def held_out_rows(manifest: dict[str, Any]) -> np.ndarray | None:
    data = manifest.get("data", {})
    idx = data.get("validation_indices")
    path = data.get("path")
    if not idx or not path or not Path(path).is_file() or sha256_file(path) != data.get("sha256"):
        return None
    table = read_table(path, manifest["features"])
    return to_matrix(table, manifest["features"], source=path)[np.asarray(idx)]


def check_parity(model, fmt: str, path: Path, rows: list[np.ndarray],
                  manifest: dict[str, Any]) -> dict[str, Any]:
    try:
        predict = _loader(fmt, path)
    except Exception as e:  # e.g. an opset newer than this onnxruntime knows
        raise ExportError(f"{fmt}: the exported file does not load ({first_line(e)})") from None
    return parity(model, fmt, predict, rows, rows, manifest)


def parity(model, fmt: str, predict, inputs: list[Any], rows: list[np.ndarray],
            manifest: dict[str, Any]) -> dict[str, Any]:
    """The exported file's predictions on ``inputs`` against the trained model's on ``rows``
    (the same rows: raw columns for a tabular ONNX file, the matrix otherwise)."""
    worst_abs, worst_rel = 0.0, 0.0
    for given, X in zip(inputs, rows):
        with torch.no_grad():
            ref = model(torch.from_numpy(X)).numpy().astype(np.float64)
        got = np.asarray(predict(given), dtype=np.float64)
        if got.shape != ref.shape:
            raise ExportError(f"{fmt}: predicted shape {got.shape} for {len(X)} row(s), "
                              f"expected {ref.shape}")
        if not (np.isfinite(ref).all() and np.isfinite(got).all()):
            raise ExportError(f"{fmt}: predictions are NaN or infinite for {len(X)} finite "
                              "row(s); the export cannot be trusted")
        err = float(np.max(np.abs(got - ref))) if ref.size else 0.0
        rel = err / max(1.0, float(np.max(np.abs(ref))))
        worst_abs, worst_rel = max(worst_abs, err), max(worst_rel, rel)
    tol = TOLERANCE[manifest["model"]["dtype"]]
    if not worst_rel <= tol:  # written so that a NaN fails too
        raise ExportError(f"{fmt} export disagrees with the trained model: max relative error "
                          f"{worst_rel:.3g} > tolerance {tol:g}")
    return {"rows_checked": [len(r) for r in rows], "max_abs_error": worst_abs,
            "max_rel_error": worst_rel, "tolerance": tol}


NUMERIC_CORE_NOTE = ("the numeric core only: it takes the encoded design matrix (the "
                     "manifest's features, in order), not raw columns; model.onnx takes raw "
                     "columns")


def tabular_parity_rows(manifest: dict[str, Any],
                        specs: list[ColumnSpec]) -> list[dict[str, np.ndarray]]:
    """Raw rows to compare on (held-out rows of the training file when it is unchanged, else
    seeded synthetic rows over the levels and around the fills, with blanks), plus 1 row and
    a large batch."""
    rng = np.random.default_rng(0)
    ranges = (manifest.get("formula") or {}).get("ranges")
    held = held_out_raw(manifest, specs)
    first = held if held is not None else _synthetic_raw(specs, 256, rng, ranges)
    return [first, {k: v[:1] for k, v in first.items()},
            _synthetic_raw(specs, LARGE_BATCH, rng, ranges)]


def held_out_raw(manifest: dict[str, Any], specs: list[ColumnSpec]) -> dict[str, np.ndarray] | None:
    data = manifest.get("data", {})
    idx, path = data.get("validation_indices"), data.get("path")
    if not idx or not path or not Path(path).is_file() or sha256_file(path) != data.get("sha256"):
        return None
    names = [s.name for s in specs]
    table = read_table(path, names, text=names, na=manifest_na_values(manifest))
    raw = raw_columns(table, names, categorical=[s.name for s in specs
                                                 if s.kind == "categorical"], source=path)
    return {k: v[np.asarray(idx)] for k, v in raw.items()}


def _synthetic_raw(specs: list[ColumnSpec], n: int, rng: np.random.Generator,
                   ranges: dict[str, list[float]] | None = None):
    """Seeded rows over the levels and around the fills (blanks too); a formula's numbers
    within their training range (where its functions are defined)."""
    raw = {}
    for s in specs:
        if s.kind == "categorical":
            raw[s.name] = np.array(s.levels, dtype=object)[rng.integers(0, len(s.levels), n)]
        elif ranges is not None:
            raw[s.name] = rng.uniform(*ranges[s.name], n)
        else:
            values = (s.fill or 0.0) + 5.0 * rng.standard_normal(n)
            if s.fill is not None:
                values[rng.random(n) < 0.1] = np.nan
            raw[s.name] = values
    return raw


def design(raw: dict[str, np.ndarray], specs: list[ColumnSpec], manifest) -> np.ndarray:
    """The training-time pipeline on raw rows: the trainer's own encoding, in the model dtype."""
    from trainer.formula import formula_of

    formula = formula_of(manifest)
    X = design_matrix(raw, specs, source="parity rows") if formula is None else \
        formula.design(raw)
    return np.ascontiguousarray(X, dtype=np.dtype(manifest["model"]["dtype"]))


def tabular_loader(path: Path, specs: list[ColumnSpec] | None, manifest: dict[str, Any]):
    """``predict(rows)``, ``bounds(rows)`` (the four interval outputs) and ``run(rows,
    names)`` (any outputs) of linreg's own graph, fed raw columns (``specs``) or the
    ``features`` matrix. Every other blank of a categorical column is fed as an NA token,
    which the graph must read as a blank."""
    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ExportError(f"onnx: the exported file does not load ({first_line(e)})") from None
    dtype = np.dtype(manifest["model"]["dtype"])
    na = manifest_na_values(manifest)

    def cells(values: np.ndarray) -> np.ndarray:
        values = values.astype(object)
        if na:
            values[np.flatnonzero(values == MISSING)[::2]] = na[0]
        return values

    def feeds(raw) -> dict[str, np.ndarray]:
        if specs is None:
            return {"features": raw}
        return {s.name: (cells(raw[s.name]) if s.kind == "categorical" else
                         raw[s.name].astype(dtype)).reshape(-1, 1) for s in specs}
    return (lambda raw: sess.run(["prediction"], feeds(raw))[0],
            lambda raw: sess.run(list(INTERVAL_OUTPUTS), feeds(raw)),
            lambda raw, names: sess.run(names, feeds(raw)))


def contribution_parity(run, inputs: list[Any], rows: list[np.ndarray], share: Any,
                        manifest: dict[str, Any]) -> dict[str, Any]:
    """The graph's contributions against the same sums in float64 numpy on the same rows
    (``share``: a :class:`trainer.contributions.Contributions`), and baseline + Σ
    contributions against the graph's own prediction."""
    worst = worst_sum = 0.0
    t, k = share.weight.shape[0], len(share.terms)
    for given, X in zip(inputs, rows):
        pred, got = (np.asarray(v, dtype=np.float64) for v in run(given, ["prediction",
                                                                          "contributions"]))
        got = got.reshape(len(X), t, k)
        want = share.of(X)
        scale = max(1.0, float(np.abs(want).max(initial=0)), float(np.abs(pred).max()))
        worst = max(worst, float(np.abs(got - want).max(initial=0)) / scale)
        total = share.baseline + got.sum(axis=2)
        worst_sum = max(worst_sum, float(np.abs(total - pred).max()) / scale)
    tol = TOLERANCE[manifest["model"]["dtype"]]
    if not worst <= tol:
        raise ExportError(f"onnx contributions disagree with the coefficients: max relative "
                          f"error {worst:.3g} > tolerance {tol:g}")
    if not worst_sum <= tol:
        raise ExportError(f"onnx contributions do not add up to the prediction: max relative "
                          f"error {worst_sum:.3g} > tolerance {tol:g}")
    return {"max_rel_error": worst, "sum_max_rel_error": worst_sum, "tolerance": tol}


def interval_parity(bounds, inputs: list[Any], rows: list[np.ndarray], iv: Intervals, model,
                     manifest: dict[str, Any]) -> dict[str, Any]:
    """The graph's bounds against the same formula in float64 numpy on the same rows."""
    bias = manifest["model"]["bias"]
    worst = 0.0
    for given, X in zip(inputs, rows):
        Z = np.hstack([np.ones((len(X), 1)), X.astype(np.float64)]) if bias else \
            X.astype(np.float64)
        with torch.no_grad():
            pred = model(torch.from_numpy(X)).numpy().astype(np.float64)
        var = np.stack([np.einsum("ij,jk,ik->i", Z, C, Z) for C in iv.cov], axis=1)
        half_mean = iv.quantile * np.sqrt(np.maximum(var, 0))
        half_obs = iv.quantile * np.sqrt(var + iv.sigma**2)
        want = [pred - half_obs, pred + half_obs, pred - half_mean, pred + half_mean]
        got = [np.asarray(b, dtype=np.float64) for b in bounds(given)]
        scale = max(1.0, max(float(np.max(np.abs(w))) for w in want))
        worst = max(worst, max(float(np.max(np.abs(g - w))) for g, w in zip(got, want)) / scale)
    tol = TOLERANCE[manifest["model"]["dtype"]]
    if not worst <= tol:
        raise ExportError(f"onnx intervals disagree with the statistics: max relative error "
                          f"{worst:.3g} > tolerance {tol:g}")
    return {"max_rel_error": worst, "tolerance": tol}


def _loader(fmt: str, path: Path):
    """Load an exported file the way its consumers will, returning predict(X) -> array."""
    if fmt == "onnx":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda X: sess.run(["prediction"], {"features": X})[0]
    if fmt == "torchscript":
        with quiet_torch():
            loaded = torch.jit.load(str(path))
        return lambda X: loaded(torch.from_numpy(X)).detach().numpy()
    with quiet_torch():
        program = torch.export.load(path)
    module = program.module()
    return lambda X: module(torch.from_numpy(X)).detach().numpy()
