"""``Explanation``: what :meth:`serve.Predictor.explain` returns, each term's share of each
prediction (exact for a linear model: baseline + Σ contributions = prediction).

    e = Predictor.load("models/cars").explain([{"weight": 3000, "origin": "Japan"}])
    e.contributions[0, 0]            # row 0, target 0: one number per term (e.terms)
    e.columns()                      # {"mpg": ..., "mpg_baseline": ..., "mpg_contrib_weight": ...}
    e.to_pandas()                    # the same as a DataFrame (pandas only if you have it)

The column names are linreg-predict's ``--contributions`` columns: one rule for both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def contribution_names(targets: Sequence[str], terms: Sequence[str]) -> list[str]:
    """Per target: ``<target>_baseline``, then ``<target>_contrib_<term>`` per term."""
    return [name for t in targets for name in
            (f"{t}_baseline", *(f"{t}_contrib_{term}" for term in terms))]


def contribution_columns(prediction: np.ndarray, contributions: np.ndarray,
                         baseline: Sequence[float]) -> np.ndarray:
    """The values of :func:`contribution_names` as one matrix ``(n, targets · (1 + terms))``,
    from the graph's ``contributions`` output ``(n, targets · terms)``; a row left NaN (an
    on_unknown ``nan`` row) has a NaN baseline too."""
    n, t = prediction.shape
    share = contributions.reshape(n, t, -1)
    base = np.broadcast_to(np.asarray(baseline, dtype=prediction.dtype)[None, :, None],
                           (n, t, 1)).copy()
    base[np.isnan(prediction)] = np.nan
    return np.concatenate([base, share], axis=2).reshape(n, -1)


@dataclass(frozen=True)
class Explanation:
    """``prediction`` ``(n, targets)``; ``contributions`` ``(n, targets, terms)``; ``baseline``
    ``(targets,)``, the mean prediction over the training rows; ``terms`` and
    ``target_names`` name the axes."""

    target_names: list[str]
    terms: list[str]
    baseline: np.ndarray
    prediction: np.ndarray
    contributions: np.ndarray

    def __len__(self) -> int:
        return len(self.prediction)

    def columns(self) -> dict[str, np.ndarray]:
        """Each target's prediction, baseline and contributions as named columns, in the
        order linreg-predict ``--contributions`` writes them."""
        values = contribution_columns(self.prediction, self.contributions.reshape(
            len(self), -1), self.baseline)
        names = contribution_names(self.target_names, self.terms)
        out = {t: self.prediction[:, j] for j, t in enumerate(self.target_names)}
        out.update({name: values[:, j] for j, name in enumerate(names)})
        return out

    def to_pandas(self) -> Any:
        """:meth:`columns` as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.columns())

    def records(self) -> list[dict[str, Any]]:
        """One object per row: ``{term: contribution}`` for a one-target model, else
        ``{target: {term: contribution}}``; NaN (a row left unpredicted) as None (JSON)."""
        rows = np.where(np.isnan(self.contributions), None,
                        self.contributions.astype(object))
        if len(self.target_names) == 1:
            return [dict(zip(self.terms, r[0])) for r in rows.tolist()]
        return [{t: dict(zip(self.terms, per)) for t, per in zip(self.target_names, r)}
                for r in rows.tolist()]
