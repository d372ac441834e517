"""The number columns linreg writes for a model's outputs, named and filled by one rule:
``linreg-predict``'s files, MLflow's pyfunc and the Dask and Spark functions all write these.

Per row: each target (plus a suffix, ``y_pred``); with intervals, per target ``y_lower``,
``y_upper`` (a new observation), ``y_mean_lower``, ``y_mean_upper``; with contributions, per
target ``y_baseline`` and ``y_contrib_<term>`` per term (they add up to ``y``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from serve.core.errors import DataError
from serve.core.graph import CONTRIBUTIONS, INTERVAL_OUTPUTS, PREDICTION
from serve.runtime.explanation import contribution_columns, contribution_names
from serve.runtime.predictor import Predictor

INTERVAL_SUFFIXES = ("lower", "upper", "mean_lower", "mean_upper")


class MissingOutput(DataError, ValueError):
    """Columns asked of a model exported without them (its intervals, its contributions)."""


def column_names(predictor: Predictor, *, suffix: str = "", intervals: bool = False,
                 contributions: bool = False) -> list[str]:
    """The columns' names, in order; refused when the model lacks what is asked."""
    names = [t + suffix for t in predictor.target_names]
    if intervals:
        if predictor.intervals is None:
            raise MissingOutput(f"{predictor.source}: this model has no intervals; export it "
                                "with linreg-export --intervals 0.95")
        names += [f"{t}_{k}" for t in predictor.target_names for k in INTERVAL_SUFFIXES]
    if contributions:
        if predictor.contributions is None:
            raise MissingOutput(f"{predictor.source}: this model has no contributions; export "
                                "it with linreg-export --contributions")
        names += contribution_names(predictor.target_names, predictor.contributions["terms"])
    return names


def column_values(predictor: Predictor, rows: Any, *, intervals: bool = False,
                  contributions: bool = False, **run: Any) -> np.ndarray:
    """The columns' values for ``rows``, ``(n, len(column_names(...)))``, from one run of the
    model (``run``: :meth:`Predictor.outputs`'s other arguments); a plain prediction when
    neither is asked."""
    if not (intervals or contributions):
        return predictor.predict(rows, **run)
    out = predictor.outputs(rows, names=[*(INTERVAL_OUTPUTS if intervals else ()),
                                         *((CONTRIBUTIONS,) if contributions else ())], **run)
    pred = out[PREDICTION]
    blocks = [pred]
    if intervals:
        blocks += [out[k][:, [t]] for t in range(predictor.n_targets) for k in INTERVAL_OUTPUTS]
    if contributions:
        blocks.append(contribution_columns(pred, out[CONTRIBUTIONS],
                                           predictor.contributions["baseline"]))
    return np.hstack(blocks)
