"""linreg-serve's HTTP protocols, one module each; each registers its own routes on the app.

- :mod:`serve.server.routes.v2`: the Open Inference Protocol v2 (KServe, Triton, MLServer), with
  Triton's model configuration extension.
- :mod:`serve.server.routes.repository`: Triton's model repository extension (index, load, unload).
- :mod:`serve.server.routes.v1`: the simple v1 style (``/predict``, ``/v1/models/NAME:predict``).
- :mod:`serve.server.routes.mlflow`: MLflow's scoring server (``/invocations``, ``/ping``).
- :mod:`serve.server.routes.ops`: the index page and ``/metrics``.

:mod:`serve.server.routes.common` holds what they share: bounded bodies and the error discipline.
"""

from __future__ import annotations

from serve.server.routes import mlflow, ops, repository, v1, v2

PROTOCOLS = (v2, v1, mlflow, repository, ops)  # the predicting routes are matched first
