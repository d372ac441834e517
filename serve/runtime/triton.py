"""A model's configuration in NVIDIA Triton's terms (``ModelConfig`` of model_config.proto).

One builder, two renderings: JSON for ``GET /v2/models/NAME/config`` (Triton's model
configuration extension, read by ``perf_analyzer`` and other fleet tooling) and protobuf text
for the ``config.pbtxt`` that ``linreg-export --format triton`` writes beside
``NAME/1/model.onnx``, the layout Triton itself serves.

The batch dimension is implicit, as Triton writes it for a model with ``max_batch_size > 0``:
``features`` has ``dims: [n_features]`` and a client sends ``[rows, n_features]``; a tabular
model has one ``dims: [1]`` input per raw column (``TYPE_STRING`` for categorical columns).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from serve.core.errors import ModelError
from serve.core.graph import CONTRIBUTIONS, INTERVAL_OUTPUTS, PREDICTION
from serve.core.jsontext import text_problem
from serve.runtime.predictor import Predictor

TRITON_TYPES = {np.dtype("float32"): "TYPE_FP32", np.dtype("float64"): "TYPE_FP64"}
EXPORT_MAX_BATCH = 65536  # rows per request a Triton serving an exported model accepts
_ENUMS = {"data_type", "kind", "format"}  # fields written bare in protobuf text


def model_config(predictor: Predictor, name: str, *, max_batch_size: int,
                 max_queue_delay_us: int | None = None) -> dict[str, Any]:
    """The ``ModelConfig`` of ``predictor`` as a dict (protobuf JSON field names)."""
    dt = TRITON_TYPES[predictor.dtype]
    if predictor.columns is None:
        inputs = [{"name": "features", "data_type": dt, "dims": [predictor.n_features]}]
    else:
        inputs = [{"name": c.name, "data_type": "TYPE_STRING" if c.kind == "categorical"
                   else dt, "dims": [1]} for c in predictor.columns]
    outputs = [{"name": n, "data_type": dt, "dims": [predictor.n_targets]}
               for n in [PREDICTION, *(INTERVAL_OUTPUTS if predictor.intervals else [])]]
    if predictor.contributions is not None:  # [batch, targets x terms]
        outputs.append({"name": CONTRIBUTIONS, "data_type": dt, "dims": [
            predictor.n_targets * len(predictor.contributions["terms"])]})
    config: dict[str, Any] = {
        "name": name, "platform": "onnxruntime_onnx", "backend": "onnxruntime",
        "max_batch_size": max_batch_size, "version_policy": {"all": {}},
        "input": inputs, "output": outputs,
        "instance_group": [{"kind": "KIND_CPU", "count": 1}],
        "default_model_filename": "model.onnx",
        "parameters": {"linreg.feature_names": {"string_value": json.dumps(
            predictor.feature_names)}, "linreg.target_names": {"string_value": json.dumps(
                predictor.target_names)}},
    }
    if max_queue_delay_us is not None:
        config["dynamic_batching"] = {"max_queue_delay_microseconds": max_queue_delay_us}
    return config


def to_pbtxt(config: dict[str, Any]) -> str:
    """``config`` in protobuf text format, as Triton's ``config.pbtxt`` files are written."""
    return "".join(_fields(config, 0))


def _fields(message: dict[str, Any], depth: int) -> list[str]:
    pad, out = "  " * depth, []
    for key, value in message.items():
        if key == "parameters":  # a proto map: one entry per key
            for k, v in value.items():
                out.append(f"{pad}parameters {{\n{pad}  key: {_scalar(k)}\n"
                           f"{pad}  value {{\n{''.join(_fields(v, depth + 2))}{pad}  }}\n"
                           f"{pad}}}\n")
        elif isinstance(value, dict):
            out.append(f"{pad}{key} {{\n{''.join(_fields(value, depth + 1))}{pad}}}\n")
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            items = [f"{pad}  {{\n{''.join(_fields(v, depth + 2))}{pad}  }}" for v in value]
            out.append(f"{pad}{key} [\n" + ",\n".join(items) + f"\n{pad}]\n")
        elif isinstance(value, list):
            out.append(f"{pad}{key}: [ {', '.join(_scalar(v) for v in value)} ]\n")
        else:
            out.append(f"{pad}{key}: {value if key in _ENUMS else _scalar(value)}\n")
    return out


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'


CONFIG = "config.pbtxt"
_CONFIG_MARK = "# written by linreg-export; sha256 of the lines below: "


def config_text(config: dict[str, Any]) -> str:
    """``config.pbtxt`` as linreg writes it: a first comment line that marks it as linreg's,
    with the sha256 of the rest, so a hand edit shows (and the file is then the user's)."""
    body = to_pbtxt(config)
    return f"{_CONFIG_MARK}{hashlib.sha256(body.encode()).hexdigest()}\n{body}"


def is_own_config(path: Path) -> bool:
    """Did linreg write ``path`` and has nobody edited it since? Never raises."""
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > 1 << 20:
            return False
        mark, _, body = path.read_bytes().partition(b"\n")
    except OSError:
        return False
    return mark.decode("latin-1") == _CONFIG_MARK + hashlib.sha256(body).hexdigest()


def is_version(name: str) -> bool:
    """A Triton version folder's name: ASCII digits without a leading zero ("1", "12").
    (``"²".isdigit()`` is true but ``int("²")`` fails: only ASCII digits are versions.)"""
    return name.isascii() and name.isdigit() and not name.startswith("0")


def version_folders(path: Path) -> dict[str, Path]:
    """Triton's numbered version folders, by version ("1", "2", ...); other entries are not
    versions (Triton ignores them too)."""
    try:
        return {p.name: p for p in path.iterdir() if is_version(p.name) and p.is_dir()}
    except OSError:
        return {}


def write_repository(model_dir: Path, repository: Path, *, name: str | None = None,
                     version: int | None = None, force: bool = False,
                     warn: Callable[[str], None] | None = None) -> tuple[Path, str]:
    """Put ``model_dir``'s exported ``model.onnx`` into a Triton model repository:
    ``REPOSITORY/NAME/VERSION/model.onnx`` (with its ``model.json``, which Triton ignores and
    linreg-serve uses to check the file) and ``REPOSITORY/NAME/config.pbtxt``.

    ``version`` None: one above the highest already there (1 for a new model). An existing
    version folder is replaced only with ``force``, only if linreg wrote it (its model.json is
    linreg's and it holds nothing else), and never through a symlink. ``config.pbtxt`` is
    (re)written only when it is absent or linreg wrote it unedited: a user's config is theirs and
    is kept (``warn`` is told). The version folder is complete before it appears."""
    from serve.core.atomic import atomic_dir, atomic_file
    from serve.core.manifest import MANIFEST, check_replaceable

    name = name or model_dir.resolve().name
    if text_problem(name):
        raise ModelError(f"{ascii(name)}: a model's name must be Unicode text (it is not "
                         "UTF-8); rename the model folder")
    predictor = Predictor.load(model_dir)  # checks the file against its manifest
    folder = repository / name
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise ModelError(f"{folder}: exists and is not a folder (a link or a file); linreg "
                         "writes Triton models only into folders of its own")
    if folder.is_dir() and (folder / "model.onnx").exists():
        raise ModelError(f"{folder}: is a model folder, not a versioned Triton model; choose "
                         "another --repository")
    existing = version_folders(folder) if folder.is_dir() else {}
    chosen = str(version if version is not None else
                 max((int(v) for v in existing), default=0) + 1)
    config_path = folder / CONFIG
    keep_config = config_path.exists() or config_path.is_symlink()
    keep_config = keep_config and not is_own_config(config_path)

    def own_version(path: Path) -> None:
        check_replaceable(path, names=frozenset({"model.onnx", MANIFEST}),
                          hint="choose another --model-version")

    with atomic_dir(folder / chosen, force=force, check_replaceable=own_version,
                    follow_link=False) as tmp:
        (tmp / "model.onnx").write_bytes((model_dir / "model.onnx").read_bytes())
        if (model_dir / MANIFEST).is_file():
            (tmp / MANIFEST).write_bytes((model_dir / MANIFEST).read_bytes())
    if keep_config:
        if warn is not None:
            warn(f"{config_path}: kept as it is (linreg did not write it, or it was edited "
                 f"since); check that it still describes version {chosen}")
    else:
        config = model_config(predictor, name, max_batch_size=EXPORT_MAX_BATCH)
        with atomic_file(config_path) as tmp_config:
            tmp_config.write_text(config_text(config))
    return folder, chosen
