"""Predictions on a Spark DataFrame you already hold, and the model as a Spark SQL function
(the ``spark`` extra). Arrow in, Arrow out, no pandas step.

    from serve.batch import spark as linreg_spark
    out = linreg_spark.predict(df, "models/example")          # df's columns + one per target
    linreg_spark.register(spark, "predict_price", "models/homes")
    spark.sql("SELECT id, predict_price(city, x1, x2) AS price FROM homes")

The model is broadcast as bytes; each Python worker opens it once (cached by its sha256,
:mod:`serve.batch.workers`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from typing import Any

from serve.batch.workers import ModelPayload, output_names, predict_batch, predictor
from serve.runtime.predictor import Predictor


def _spark_type(model: Predictor) -> Any:
    from pyspark.sql.types import DoubleType, FloatType

    return DoubleType() if model.dtype.itemsize == 8 else FloatType()


def predict(df: Any, model: str | os.PathLike | Predictor, *, threads: int = 1,
            suffix: str = "", on_unknown: str | None = None,
            contributions: bool = False) -> Any:
    """``df`` with one more column per target (named after it, plus ``suffix``), computed with
    ``mapInArrow``; ``on_unknown="nan"`` makes a row the model cannot take NaN instead of
    failing the job (see :meth:`Predictor.predict`); ``contributions`` adds each target's
    baseline and each term's contribution (``y_baseline``, ``y_contrib_<term>``, as
    linreg-predict writes them; the model needs linreg-export --contributions)."""
    import pyarrow as pa
    from pyspark.sql.types import StructField, StructType

    payload = ModelPayload.of(model, threads=threads)
    local = predictor(payload)
    names = output_names(local, suffix, contributions)
    if clash := sorted(set(names) & set(df.columns)):
        raise ValueError(f"the DataFrame already has a column {clash[0]!r}; pass suffix='_pred'")
    shared = df.sparkSession.sparkContext.broadcast(payload)
    schema = StructType(df.schema.fields + [StructField(n, _spark_type(local), False)
                                            for n in names])
    arrow_type = pa.float64() if local.dtype.itemsize == 8 else pa.float32()

    def run(batches: Iterator[Any]) -> Iterator[Any]:
        model = predictor(shared.value)
        for batch in batches:
            pred = predict_batch(model, batch, source="Spark batch", on_unknown=on_unknown,
                                 contributions=contributions)
            arrays = list(batch.columns) + [pa.array(pred[:, j], arrow_type)
                                            for j in range(pred.shape[1])]
            yield pa.RecordBatch.from_arrays(arrays, names=list(batch.schema.names) + names)

    return df.mapInArrow(run, schema)


def register(spark: Any, name: str, model: str | os.PathLike | Predictor, *,
             threads: int = 1, on_unknown: str | None = None) -> Any:
    """Register ``name(col, ...)`` as a Spark SQL function taking the model's input columns in
    order (``feature_names``) and returning its prediction (the first target's; a
    multi-target model returns an array of them), under ``on_unknown`` (see
    :meth:`Predictor.predict`). Returns the registered function."""
    import pyarrow as pa
    from pyspark.sql.functions import arrow_udf
    from pyspark.sql.types import ArrayType
    from pyspark.util import PythonEvalType

    payload = ModelPayload.of(model, threads=threads)
    local = predictor(payload)
    shared = spark.sparkContext.broadcast(payload)
    features, single = local.feature_names, local.n_targets == 1
    out_type = _spark_type(local) if single else ArrayType(_spark_type(local), False)

    def run(*columns: pa.Array) -> pa.Array:
        batch = pa.RecordBatch.from_arrays(list(columns), names=features)
        pred = predict_batch(predictor(shared.value), batch, source=f"SQL function {name}",
                             on_unknown=on_unknown)
        return pa.array(pred[:, 0]) if single else pa.array(pred.tolist())

    with warnings.catch_warnings():  # the type is given: pyspark would rather read hints
        warnings.simplefilter("ignore", UserWarning)
        function = arrow_udf(run, out_type, functionType=PythonEvalType.SQL_SCALAR_ARROW_UDF)
    spark.udf.register(name, function)
    return function
