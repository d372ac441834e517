"""linreg's runtime as an MLflow ``python_function`` model: the loader MLflow imports
(``loader_module``) when it loads a model written by ``linreg-export --format mlflow``.

    model = mlflow.pyfunc.load_model("models/cars-mlflow")
    model.predict(df)                 # a DataFrame: what linreg-predict writes, column for column
    model.predict(df, params={"on_unknown": "nan"})

No torch and no trainer: :class:`serve.Predictor` runs the model.onnx inside the MLflow model,
so ``mlflow models serve``, ``mlflow.pyfunc.spark_udf`` and any pyfunc consumer get the numbers
``linreg-predict`` gives (the same reader of raw columns: levels, blanks, NA tokens).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from serve.core.graph import CONTRIBUTIONS, INTERVAL_OUTPUTS, PREDICTION
from serve.runtime.explanation import contribution_columns, contribution_names
from serve.runtime.predictor import Predictor

INTERVAL_SUFFIXES = ("lower", "upper", "mean_lower", "mean_upper")


def output_columns(predictor: Predictor) -> list[str]:
    """The columns :meth:`LinregModel.predict` returns, in order: each target, then per target
    its four bounds (a model with intervals), then per target its baseline and each term's
    contribution (a model with contributions): linreg-predict's names."""
    names = list(predictor.target_names)
    if predictor.intervals is not None:
        names += [f"{t}_{k}" for t in predictor.target_names for k in INTERVAL_SUFFIXES]
    if predictor.contributions is not None:
        names += contribution_names(predictor.target_names, predictor.contributions["terms"])
    return names


class LinregModel:
    """The pyfunc model: ``predict(model_input, params=None)`` of a pandas DataFrame (or what
    :meth:`Predictor.predict` takes), a DataFrame of :func:`output_columns`."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self.columns = output_columns(predictor)

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        import pandas as pd

        p = self.predictor
        on_unknown = (params or {}).get("on_unknown")
        out = p.outputs(model_input, on_unknown=on_unknown)
        pred = out[PREDICTION]
        blocks = [pred]
        if p.intervals is not None:
            blocks += [out[k][:, [t]] for t in range(p.n_targets) for k in INTERVAL_OUTPUTS]
        if p.contributions is not None:
            blocks.append(contribution_columns(pred, out[CONTRIBUTIONS],
                                               p.contributions["baseline"]))
        values = np.hstack(blocks)
        index = model_input.index if isinstance(model_input, pd.DataFrame) else None
        return pd.DataFrame(values, columns=self.columns, index=index)


def _load_pyfunc(path: str) -> LinregModel:
    """MLflow's entry: ``path`` is the model's data folder (model.onnx and model.json)."""
    return LinregModel(Predictor.load(Path(path)))
