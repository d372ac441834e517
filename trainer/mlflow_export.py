"""``linreg-export MODEL --format mlflow --mlflow-dir DIR``: an MLflow Model directory.

DIR/MLmodel has two flavours: ``onnx`` (``mlflow.onnx.load_model`` reads the graph) and
``python_function`` whose loader is linreg's runtime (:mod:`serve.runtime.mlflow_model`: no
torch), with the signature (each raw column's type; the output columns linreg-predict writes,
intervals and contributions included) and the runtime's requirements only, pinned to the
versions installed here. DIR/data/model holds model.onnx and model.json (the runtime checks
one against the other).
"""

from __future__ import annotations

import importlib.metadata
import shutil
import tempfile
from pathlib import Path
from typing import Any

from serve.core.errors import LinregError
from trainer.parity import ExportError

RUNTIME = ("numpy", "onnxruntime", "pyarrow", "click", "tqdm", "pandas")  # serve's, and pandas


def mlflow_module() -> Any:
    """``mlflow``, or a one-line error naming the extra."""
    try:
        import mlflow
    except ImportError:
        raise ExportError("MLflow is not installed: pip install 'linreg[mlflow]'") from None
    return mlflow


def write_mlflow_model(folder: Path, dest: Path, *, force: bool = False) -> Path:
    """Write the MLflow Model of the exported model in ``folder`` (its model.onnx) to ``dest``,
    built beside it and renamed into place; ``force`` replaces one linreg wrote."""
    from serve.core.atomic import atomic_dir
    from serve.runtime.mlflow_model import output_columns
    from serve.runtime.predictor import Predictor

    mlflow = mlflow_module()
    from mlflow.models import Model

    if not (folder / "model.onnx").is_file():
        raise ExportError(f"{folder}: no model.onnx; export it first (linreg-export {folder})")
    predictor = Predictor.load(folder)  # checks the file against model.json, as consumers do
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "model"
        data.mkdir()
        for name in ("model.onnx", "model.json"):
            shutil.copy2(folder / name, data / name)
        model = Model()
        import onnx

        model.add_flavor("onnx", onnx_version=onnx.__version__, data="data/model/model.onnx",
                         providers=["CPUExecutionProvider"], code=None)
        with atomic_dir(dest, force=force, check_replaceable=_check_mlflow_dir) as out:
            out.rmdir()  # save_model makes the folder itself
            try:
                mlflow.pyfunc.save_model(
                    str(out), loader_module="serve.runtime.mlflow_model", data_path=str(data),
                    mlflow_model=model, signature=_signature(predictor, output_columns(
                        predictor)), pip_requirements=requirements())
            except LinregError:
                raise
            except Exception as e:  # MLflow's own errors: one line
                raise ExportError(f"MLflow could not write the model: {e}") from None
    return dest


def requirements() -> list[str]:
    """The runtime's packages, pinned to the versions installed here, and linreg itself."""
    pins = []
    for name in RUNTIME:
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    from serve.version import __version__

    return [*pins, f"linreg=={__version__}"]


def _signature(predictor: Any, outputs: list[str]) -> Any:
    """The inputs: each raw column (string for a categorical one, the model's float type
    else; a plain model's features); the outputs: linreg-predict's columns."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types import ColSpec, Schema

    number = "float" if predictor.dtype.itemsize == 4 else "double"
    if predictor.columns is not None:
        inputs = [ColSpec("string" if c.kind == "categorical" else number, c.name,
                          required=not (c.kind == "categorical" or c.fill is not None))
                  for c in predictor.columns]
    else:
        inputs = [ColSpec(number, name) for name in predictor.feature_names]
    return ModelSignature(Schema(inputs), Schema([ColSpec(number, n) for n in outputs]))


def _check_mlflow_dir(path: Path) -> None:
    """--force replaces only an MLflow model linreg wrote (its MLmodel names linreg's
    loader)."""
    from serve.core.errors import OutputError

    mlmodel = path / "MLmodel"
    if not mlmodel.is_file() or \
            "serve.runtime.mlflow_model" not in mlmodel.read_text(errors="replace"):
        raise OutputError(f"{path}: not an MLflow model linreg-export wrote; --force replaces "
                          "only those (choose another --mlflow-dir)")
