"""Predictions on a Dask dataframe you already hold (the ``dask`` extra).

    import dask.dataframe as dd
    from serve.batch import dask as linreg_dask
    ddf = dd.read_parquet("data/parts/")
    out = linreg_dask.predict(ddf, "models/example")    # a dask dataframe: ddf's columns + y
    out.to_parquet("data/predictions/")

The model travels with the graph as bytes; each worker process opens it once (cached by its
sha256, :mod:`serve.batch.workers`). Partitions are predicted through Arrow (the same number rule and
checks as ``linreg-predict``), and a bad cell names the partition and its row.
"""

from __future__ import annotations

import os
from typing import Any

from serve.batch.workers import ModelPayload, output_names, predict_batch, predictor
from serve.runtime.predictor import Predictor


def predict(ddf: Any, model: str | os.PathLike | Predictor, *, threads: int = 1,
            suffix: str = "", on_unknown: str | None = None,
            contributions: bool = False) -> Any:
    """``ddf`` with one more column per target (named after it, plus ``suffix``);
    ``on_unknown="nan"`` makes a row the model cannot take NaN instead of failing the
    computation (see :meth:`Predictor.predict`); ``contributions`` adds each target's
    baseline and each term's contribution (``y_baseline``, ``y_contrib_<term>``, as
    linreg-predict writes them; the model needs linreg-export --contributions)."""
    import pandas as pd

    payload = ModelPayload.of(model, threads=threads)
    local = predictor(payload)
    names = output_names(local, suffix, contributions)
    if clash := sorted(set(names) & set(ddf.columns)):
        raise ValueError(f"the dataframe already has a column {clash[0]!r}; pass suffix='_pred'")
    meta = ddf._meta.assign(**{n: pd.Series(dtype=local.dtype) for n in names})
    return ddf.map_partitions(_partition, payload, names, on_unknown, contributions, meta=meta)


def _partition(pdf: Any, payload: ModelPayload, names: list[str], on_unknown: str | None,
               contributions: bool, partition_info: dict | None = None) -> Any:
    import pyarrow as pa

    number = (partition_info or {}).get("number", "?")
    pred = predict_batch(predictor(payload), pa.Table.from_pandas(pdf, preserve_index=False),
                         source=f"partition {number}", on_unknown=on_unknown,
                         contributions=contributions)
    return pdf.assign(**{n: pred[:, j] for j, n in enumerate(names)})
