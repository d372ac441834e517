"""The Open Inference Protocol's metadata, for HTTP (``GET /v2``, ``GET /v2/models/NAME``) and
gRPC (ServerMetadata, ModelMetadata) alike."""

from __future__ import annotations

import json
from typing import Any

from serve.core.columns import specs_json
from serve.core.graph import FEATURES
from serve.runtime.predictor import Predictor
from serve.server.dataplane import DATATYPE_OF, output_names
from serve.version import __version__

EXTENSIONS = ["binary_tensor_data", "model_repository", "model_configuration"]


def _json_list(value: str | None) -> list[str] | None:
    """A metadata string holding a JSON list of names, or None."""
    try:
        names = json.loads(value) if value else None
    except ValueError:
        return None
    return names if isinstance(names, list) and all(isinstance(n, str) for n in names) \
        else None


def server_metadata() -> dict[str, Any]:
    return {"name": "linreg", "version": __version__, "extensions": EXTENSIONS}


def model_metadata(predictor: Predictor, name: str,
                   versions: list[str] | None = None) -> dict[str, Any]:
    """The v2 model metadata: inputs (``features``, or one per raw column), outputs, and the
    names, columns and intervals in ``parameters``."""
    dt = DATATYPE_OF[predictor.dtype]
    params: dict[str, Any] = {"feature_names": predictor.feature_names,
                              "target_names": predictor.target_names}
    outputs = [{"name": n, "datatype": dt, "shape": [-1, predictor.n_targets]}
               for n in output_names(predictor)]
    if predictor.intervals is not None:  # linreg-export --intervals
        params["intervals"] = predictor.intervals
    meta = predictor.metadata
    if names := _json_list(meta.get("encoded_names")):  # the coefficients' names (design)
        params["coefficient_names"] = names
    if meta.get("linreg.formula"):  # --formula: the formula, and the scale it predicts on
        params["formula"], params["response"] = meta["linreg.formula"], meta.get(
            "linreg.response")
    if predictor.contributions is not None:  # linreg-export --contributions: its width
        outputs[-1]["shape"] = [-1, predictor.n_targets * len(predictor.contributions["terms"])]
        params["contributions"] = predictor.contributions
    if predictor.columns is not None:  # one input per raw column
        inputs = [{"name": c.name, "datatype": "BYTES" if c.kind == "categorical" else dt,
                   "shape": [-1, 1]} for c in predictor.columns]
        params["columns"] = specs_json(predictor.columns)
    else:
        inputs = [{"name": FEATURES, "datatype": dt, "shape": [-1, predictor.n_features]}]
    return {"name": name, "versions": versions or ["1"], "platform": "onnxruntime_onnx",
            "inputs": inputs, "outputs": outputs, "parameters": params}

