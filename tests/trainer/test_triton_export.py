"""linreg-export --format triton: the layout NVIDIA Triton serves (``NAME/config.pbtxt``,
``NAME/VERSION/model.onnx``), checked by parsing the config with Triton's own ``ModelConfig``
message (Triton cannot run here), and served back by linreg's repository."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format

from serve import Predictor
from serve.core.manifest import sha256_file
from serve.server.repository import Repository
from tests.serve.conftest import MODELS
from tests.trainer.commands import export
from tests.trainer.test_export import _trained

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")


def _config(path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_a_trained_model_goes_into_a_triton_repository(tmp_path):
    folder = _trained(tmp_path, "8x2")
    repo = tmp_path / "triton"
    res = export(folder, "--format", "triton", "--repository", repo)  # exports model.onnx first
    assert f"{repo}/8x2: Triton model '8x2' version 1" in res.output
    assert sha256_file(repo / "8x2" / "1" / "model.onnx") == sha256_file(folder / "model.onnx")
    config = _config(repo / "8x2" / "config.pbtxt")
    assert (config.name, config.platform, config.backend, config.max_batch_size) == (
        "8x2", "onnxruntime_onnx", "onnxruntime", 65536)
    assert [(i.name, model_config_pb2.DataType.Name(i.data_type), list(i.dims))
            for i in config.input] == [("features", "TYPE_FP32", [8])]
    assert [(o.name, list(o.dims)) for o in config.output] == [("prediction", [2])]
    assert config.version_policy.HasField("all")
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    # 2. Again: the next version; a version already there needs --force.
    export(folder, "--format", "triton", "--repository", repo, "-q")
    assert sorted(p.name for p in (repo / "8x2").iterdir()) == ["1", "2", "config.pbtxt"]
    res = export(folder, "--format", "triton", "--repository", repo, "--model-version", "2",
                 code=1)
    assert res.stderr == f"linreg-export: error: {repo}/8x2/2: already exists; pass --force to " \
                         "overwrite it\n"
    export(folder, "--format", "triton", "--repository", repo, "--model-version", "2",
           "--force", "-q")
    # 3. linreg-serve's repository serves it, version 2 by default, like the model folder.
    X = np.random.default_rng(0).normal(size=(5, 8))
    served = Repository.open(repo).get("8x2")
    assert served.version == "2"
    np.testing.assert_array_equal(served.predictor.predict(X), Predictor.load(folder).predict(X))


def test_a_tabular_model_with_intervals_has_per_column_inputs(tmp_path):
    repo = tmp_path / "triton"
    export(MODELS / "intervals", "--format", "triton", "--repository", repo, "-q")
    config = _config(repo / "intervals" / "config.pbtxt")
    assert [(i.name, model_config_pb2.DataType.Name(i.data_type), list(i.dims))
            for i in config.input] == [("city", "TYPE_STRING", [1]), ("x1", "TYPE_FP64", [1]),
                                       ("x2", "TYPE_FP64", [1])]
    assert [o.name for o in config.output] == ["prediction", "prediction_lower",
                                               "prediction_upper", "mean_lower", "mean_upper"]
    assert config.parameters["linreg.target_names"].string_value == '["y"]'


@pytest.mark.parametrize("args, message", [
    (["--format", "triton"], "--format triton and --repository DIR go together"),
    (["--repository", "r"], "--format triton and --repository DIR go together"),
    (["--model-version", "1"], "--model-version is for --format triton"),
])
def test_triton_flags_go_together(args, message):
    res = export(MODELS / "one", *args, code=2)
    assert res.stderr.splitlines()[-1] == f"linreg-export: error: {message}"


def test_a_repository_entry_that_is_a_plain_model_folder_is_refused(tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "model.onnx").write_bytes(b"x")
    res = export(MODELS / "one", "--format", "triton", "--repository", tmp_path, code=1)
    assert res.stderr == (f"linreg-export: error: {tmp_path}/one: is a model folder, not a "
                          "versioned Triton model; choose another --repository\n")
