"""How a :class:`serve.runtime.predictor.Predictor` runs its model: onnxruntime on the CPU
(:class:`OnnxBackend`), or a TorchScript file when torch happens to be installed
(:class:`TorchScriptBackend`); and :class:`Cancel`, which stops a run from another thread."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np

from serve.core.columns import specs_from_json
from serve.core.errors import ModelError, first_line
from serve.core.graph import CONTRIBUTIONS, INTERVAL_OUTPUTS, PREDICTION
from serve.core.manifest import MANIFEST, read_manifest, verify_artifact

SMALL_BATCH = 2048  # rows; below this a one-thread sequential session answers fastest
MAX_MODEL_BYTES = 1 << 30  # a linear model is tiny; refuse to read a huge "model" into memory


def read_model_bytes(path: Path) -> bytes:
    """The whole model file, read once; the manifest beside it, if any, must agree (sha256)."""
    try:
        size = path.stat().st_size
        if size > MAX_MODEL_BYTES:
            raise ModelError(f"{path}: {size:,} bytes is too large for a linreg model")
        data = path.read_bytes()
    except OSError as e:
        raise ModelError(f"{path}: cannot read ({e.strerror})") from None
    if (path.parent / MANIFEST).is_file():
        verify_artifact(read_manifest(path.parent), path.parent, path.name, data)
    return data


class Cancel:
    """Stops a :meth:`Predictor.predict` in flight from another thread (a request past its
    deadline, a server shutting down): onnxruntime checks the flag between operators."""

    def __init__(self) -> None:
        self.cancelled = False
        self._run_options: Any = None

    def run_options(self, ort: Any) -> Any:
        if self._run_options is None:
            self._run_options = ort.RunOptions()
            self._run_options.log_severity_level = 4  # the caller reports a cancel its own way
            self._run_options.terminate = self.cancelled
        return self._run_options

    def cancel(self) -> None:
        self.cancelled = True
        if self._run_options is not None:
            self._run_options.terminate = True


class Backend:
    dtype: np.dtype
    width_in: int
    width_out: int

    def run(self, rows: np.ndarray, cancel: Cancel | None = None) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError


ORT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64}


class OnnxBackend(Backend):
    """onnxruntime on the CPU; one or two sessions as :meth:`Predictor.load` explains, both
    built from the same bytes."""

    def __init__(self, data: bytes, path: Path, threads: int | None) -> None:
        import onnxruntime as ort

        self._ort, self._data, self._threads = ort, data, threads
        self._path = path
        try:
            self._small = self._session(1 if threads is None else threads)
        except Exception as e:  # onnxruntime raises its own types for a corrupt file
            raise ModelError(f"{path}: onnxruntime cannot load it ({first_line(e)})") from None
        self._large = self._small if threads is not None else None
        inputs, outputs = self._small.get_inputs(), self._small.get_outputs()
        self.metadata = dict(self._small.get_modelmeta().custom_metadata_map)
        self.columns = None
        self.interval_names: list[str] = []
        self.contribution_width = 0  # linreg-export --contributions: that output's width
        if len(outputs) > 1 and outputs[-1].name == CONTRIBUTIONS \
                and "linreg.contributions" in self.metadata:
            last = outputs[-1]
            if last.type != outputs[0].type or len(last.shape) != 2 \
                    or not isinstance(last.shape[1], int):
                raise ModelError(f"{path}: the contributions output differs in type or shape "
                                 "from 'prediction'")
            self.contribution_width, outputs = int(last.shape[1]), outputs[:-1]
        names = [o.name for o in outputs]
        if names == [PREDICTION, *INTERVAL_OUTPUTS] and "linreg.intervals" in self.metadata:
            if any((o.type, o.shape) != (outputs[0].type, outputs[0].shape) for o in outputs):
                raise ModelError(f"{path}: the interval outputs differ from 'prediction'")
            self.interval_names, outputs = list(INTERVAL_OUTPUTS), outputs[:1]
        if "linreg.columns" in self.metadata:
            self._raw_columns(inputs, outputs)
            return
        if len(inputs) != 1 or len(outputs) != 1 or len(inputs[0].shape) != 2 \
                or inputs[0].type not in ORT_TYPES or len(outputs[0].shape) != 2:
            raise ModelError(f"{path}: not a linreg model (expected one 2-D float input and one "
                             "2-D output)")
        if not all(isinstance(d, int) for d in (inputs[0].shape[1], outputs[0].shape[1])):
            # onnxruntime found the declared widths at odds with what the graph computes
            raise ModelError(f"{path}: the graph's declared shapes do not match what it "
                             f"computes (onnxruntime infers {inputs[0].shape} -> "
                             f"{outputs[0].shape})")
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        self.dtype = np.dtype(ORT_TYPES[inputs[0].type])
        self.width_in = int(inputs[0].shape[1])
        self.width_out = int(outputs[0].shape[1])
        self._outputs = [self.output_name]
        self._run_small = self._small.run
        self._feeds = lambda rows: {self.input_name: rows}

    def _raw_columns(self, inputs: list[Any], outputs: list[Any]) -> None:
        """A tabular model: one input per raw column, as its specs in the metadata say."""
        path = self._path
        self.columns = specs_from_json(self.metadata["linreg.columns"], str(path))
        if len(outputs) != 1 or len(outputs[0].shape) != 2 or outputs[0].type not in ORT_TYPES \
                or not isinstance(outputs[0].shape[1], int):
            raise ModelError(f"{path}: not a linreg model (expected one 2-D float output)")
        self.dtype = np.dtype(ORT_TYPES[outputs[0].type])
        want = {c.name: ("tensor(string)" if c.kind == "categorical" else outputs[0].type)
                for c in self.columns}
        got = {i.name: i.type for i in inputs}
        if got != want:
            raise ModelError(f"{path}: the graph's inputs {got} do not match its column specs "
                             f"{want}")
        self.output_name = outputs[0].name
        self.width_in, self.width_out = len(self.columns), int(outputs[0].shape[1])
        self._outputs = [self.output_name]
        self._run_small = self._small.run
        self._feeds = lambda arrays: arrays

    def _session(self, threads: int):
        ort = self._ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        return ort.InferenceSession(self._data, sess_options=opts,
                                    providers=["CPUExecutionProvider"])

    def run(self, rows: np.ndarray, cancel: Cancel | None = None,
            names: list[str] | None = None) -> Any:
        """The prediction; or, given output ``names``, the list of those outputs."""
        session_run = self._run_small
        n = len(rows) if self.columns is None else len(next(iter(rows.values())))
        if n >= SMALL_BATCH and self._threads is None:
            if self._large is None:
                self._large = self._session(0)  # 0: one thread per physical core
            session_run = self._large.run
        wanted = names or self._outputs
        if cancel is None:
            out = session_run(wanted, self._feeds(rows))
            return out if names else out[0]
        try:
            out = session_run(wanted, self._feeds(rows), cancel.run_options(self._ort))
            return out if names else out[0]
        except Exception as e:
            if cancel.cancelled:
                raise PredictionCancelled("prediction cancelled") from None
            raise ModelError(f"{self._path}: onnxruntime failed ({first_line(e)})") from None


class PredictionCancelled(ModelError):
    """A prediction stopped by its :class:`Cancel` (deadline passed, server shutting down)."""


class TorchScriptBackend(Backend):
    """TorchScript via torch, imported only here, so the ONNX path never loads torch."""

    def __init__(self, data: bytes, path: Path) -> None:
        try:  # imported by name, here only: the runtime stays torch-free until asked
            torch = importlib.import_module("torch")
        except ImportError:
            raise ModelError(f"{path}: TorchScript needs torch, which is not installed; load "
                             "the model's .onnx instead, or pip install 'linreg[train]'") from None
        import io
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                self._module = torch.jit.load(io.BytesIO(data), map_location="cpu")
            except Exception as e:
                raise ModelError(f"{path}: torch.jit.load cannot load it "
                                 f"({first_line(e)})") from None
        self._torch = torch
        weight = dict(self._module.named_parameters()).get("linear.weight")
        if weight is None or weight.ndim != 2:
            raise ModelError(f"{path}: not a linreg TorchScript model (no linear.weight)")
        self.width_out, self.width_in = weight.shape
        self.dtype = np.dtype(str(weight.dtype).removeprefix("torch."))

    def run(self, rows: np.ndarray, cancel: Cancel | None = None) -> np.ndarray:
        with self._torch.no_grad():
            return self._module(self._torch.from_numpy(rows)).numpy()
