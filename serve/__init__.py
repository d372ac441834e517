"""linreg's runtime: load an exported model and predict, with onnxruntime and numpy, never torch."""

from serve.errors import DataError, LinregError, ModelError
from serve.predictor import PredictionInputError, Predictor

__all__ = ["DataError", "LinregError", "ModelError", "PredictionInputError", "Predictor"]
