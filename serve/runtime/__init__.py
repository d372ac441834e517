"""The runtime: :class:`serve.runtime.predictor.Predictor` loads an exported model and predicts
with onnxruntime and numpy (never torch); :mod:`.triton` lays a model out for Triton. It
imports the core only."""
