"""linreg's trainer: ``linreg-train``, ``linreg-export`` and ``linreg-summary``, and the
scikit-learn estimator :class:`LinregRegressor` (imported on first use: ``from trainer import
LinregRegressor`` needs scikit-learn, the CLIs do not)."""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "LinregRegressor":
        try:
            from trainer.estimator import LinregRegressor
        except ModuleNotFoundError as e:
            if e.name != "sklearn":
                raise
            raise ImportError("LinregRegressor needs scikit-learn: pip install "
                              "'linreg[sklearn]'") from None
        return LinregRegressor
    raise AttributeError(f"module 'trainer' has no attribute {name!r}")
