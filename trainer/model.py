"""The model: H(x) = Wx + b, an ``nn.Module`` holding one ``nn.Linear``."""

from __future__ import annotations

import torch
from torch import nn


class LinearRegression(nn.Module):
    """``n_features`` inputs to ``n_targets`` outputs; ``bias=False`` gives the tutorial's H(x) = Wx.

    The state_dict keys are ``linear.weight`` (n_targets, n_features) and ``linear.bias``
    (n_targets,), exactly as a plain tutorial script holding ``self.linear`` would save them.
    """

    def __init__(self, n_features: int, n_targets: int = 1, *, bias: bool = True,
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.linear = nn.Linear(n_features, n_targets, bias=bias, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def build_model(n_features: int, n_targets: int, *, bias: bool, init: str | float,
                dtype: torch.dtype) -> LinearRegression:
    """The model with ``nn.Linear``'s own init (from torch's global RNG), zeros (the tutorials'),
    or every parameter at one constant (``init`` a number)."""
    model = LinearRegression(n_features, n_targets, bias=bias, dtype=dtype)
    if init != "default":
        value = 0.0 if init == "zeros" else float(init)
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(value)
    return model


def model_from_state_dict(state: dict[str, torch.Tensor]) -> LinearRegression:
    """Rebuild the model from a saved state_dict (shapes and dtype come from the tensors)."""
    weight = state["linear.weight"]
    model = LinearRegression(weight.shape[1], weight.shape[0], bias="linear.bias" in state,
                             dtype=weight.dtype)
    model.load_state_dict(state)
    return model
