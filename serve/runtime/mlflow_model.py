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

from serve.runtime.output_columns import column_names, column_values
from serve.runtime.predictor import Predictor


def output_columns(predictor: Predictor) -> list[str]:
    """The columns :meth:`LinregModel.predict` returns: linreg-predict's, every output the
    model has (:mod:`serve.runtime.output_columns`)."""
    return column_names(predictor, intervals=predictor.intervals is not None,
                        contributions=predictor.contributions is not None)


class LinregModel:
    """The pyfunc model: ``predict(model_input, params=None)`` of a pandas DataFrame (or what
    :meth:`Predictor.predict` takes), a DataFrame of :func:`output_columns`."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self.columns = output_columns(predictor)

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        import pandas as pd

        p = self.predictor
        values = column_values(p, model_input, intervals=p.intervals is not None,
                               contributions=p.contributions is not None,
                               on_unknown=(params or {}).get("on_unknown"))
        index = model_input.index if isinstance(model_input, pd.DataFrame) else None
        return pd.DataFrame(values, columns=self.columns, index=index)


def _load_pyfunc(path: str) -> LinregModel:
    """MLflow's entry: ``path`` is the model's data folder (model.onnx and model.json)."""
    return LinregModel(Predictor.load(Path(path)))
