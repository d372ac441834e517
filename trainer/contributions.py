"""Contributions: each term's exact share of a prediction (``linreg-export --contributions``).

A linear model's explanation needs no sampling: with x a row of the design (the encoded
columns the linear map reads), w_t the coefficients of target t, b_t its intercept and m the
design columns' means over the training rows,

    prediction_t = baseline_t + Σ_terms w_t[J]·(x[J] − m[J]),    baseline_t = b_t + w_t·m,

where J are a term's design columns and the baseline is the mean prediction over the training
rows. The terms are what a user wrote: a plain model's features; a tabular model's raw columns
(a categorical column's indicators together, a numeric column with its missing indicator); a
formula's terms (``C(city)`` with its contrast columns, ``a:b``, ``I(x ** 2)``).

In the graph the whole thing is one ``Gemm``: contributions = X·B + c, with B (p, t·k) holding
w_t on term k's columns and c = −m·B; its output is ``[batch, t·k]``, target-major (k columns
per target), so a one-target model's is ``[batch, n_terms]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainer.parity import ExportError

OUTPUT = "contributions"


@dataclass(frozen=True)
class Contributions:
    """The terms, which design columns each one sums (``groups``, (p, k) of 0/1), the training
    means ``m`` (p,), the coefficients (t, p) and intercepts (t,)."""

    terms: list[str]
    groups: np.ndarray
    means: np.ndarray
    weight: np.ndarray
    intercept: np.ndarray

    @property
    def baseline(self) -> np.ndarray:
        """The mean prediction over the training rows, per target."""
        return self.intercept + self.weight @ self.means

    def gemm(self) -> tuple[np.ndarray, np.ndarray]:
        """``B`` (p, t·k) and ``c`` (t·k,): contributions = X·B + c, target-major."""
        t, p = self.weight.shape
        B = (self.weight[:, :, None] * self.groups[None, :, :]).transpose(1, 0, 2) \
            .reshape(p, -1)
        return B, -(self.means @ B)

    def of(self, X: np.ndarray) -> np.ndarray:
        """The contributions of design rows ``X`` in float64, ``(n, t, k)`` (the reference the
        exported graph is checked against)."""
        centred = np.asarray(X, dtype=np.float64) - self.means
        return np.einsum("np,tp,pk->ntk", centred, self.weight, self.groups)

    def metadata(self, targets: Sequence[str]) -> dict[str, Any]:
        """``linreg.contributions`` in model.onnx: the terms in output order and each target's
        baseline (baseline + Σ contributions = prediction)."""
        return {"output": OUTPUT, "terms": list(self.terms), "targets": list(targets),
                "baseline": self.baseline.tolist()}


def contributions_of(manifest: Mapping[str, Any], specs: Sequence[Any] | None,
                     weight: np.ndarray, bias: np.ndarray | None) -> Contributions:
    """The contributions of a trained model (its manifest, raw-column ``specs`` or None)."""
    means = manifest["model"].get("feature_means")
    if means is None:
        raise ExportError("--contributions: this model was trained by an older linreg, which "
                          "did not keep the training rows' means; train it again")
    means = np.asarray(means, dtype=np.float64)
    terms, owner = terms_of(manifest, specs)
    if len(owner) != weight.shape[1] or len(means) != weight.shape[1]:
        raise ExportError(f"--contributions: model.json's terms cover {len(owner)} design "
                          f"columns and {len(means)} means, but the model has "
                          f"{weight.shape[1]}; train it again")
    groups = np.zeros((len(owner), len(terms)))
    groups[np.arange(len(owner)), owner] = 1.0
    intercept = np.zeros(weight.shape[0]) if bias is None else np.asarray(bias, np.float64)
    return Contributions(terms, groups, means, np.asarray(weight, np.float64), intercept)


def terms_of(manifest: Mapping[str, Any], specs: Sequence[Any] | None
             ) -> tuple[list[str], list[int]]:
    """The terms, and for each design column the index of the term it belongs to."""
    formula = manifest.get("formula")
    if formula is not None:  # a formula's terms (a column without one, from before: its own)
        labels = [c.get("term", c["name"]) for c in formula["columns"]]
    elif specs:  # a tabular model: one term per raw column
        labels = [s.name for s in specs for _ in s.encoded_names()]
        terms = [s.name for s in specs]  # a column with no design column still gets its 0
        return terms, [terms.index(label) for label in labels]
    else:
        labels = list(manifest["features"])
    terms = list(dict.fromkeys(labels))
    return terms, [terms.index(label) for label in labels]
