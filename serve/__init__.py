"""linreg's runtime: load an exported model and predict, with onnxruntime and numpy, never torch.

Names are imported on first use (PEP 562), so ``import serve`` and the console scripts' ``--help``
load nothing heavy; ``from serve import Predictor`` loads numpy and the predictor then.
"""

from __future__ import annotations

from typing import Any

from serve.core.errors import DataError, LinregError, ModelError

__all__ = ["DataError", "LinregError", "ModelError", "PredictionInputError", "Predictor"]


def __getattr__(name: str) -> Any:
    if name in ("Predictor", "PredictionInputError"):
        from serve.runtime import predictor

        return getattr(predictor, name)
    if name in ("dask", "spark"):  # ``from serve import dask``: the engines' public helpers
        import importlib

        return importlib.import_module(f"serve.batch.{name}")
    raise AttributeError(f"module 'serve' has no attribute {name!r}")
