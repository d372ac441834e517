"""Export a trained model folder to ONNX, TorchScript and (opt-in) torch.export's ``.pt2``.

    linreg-export models/example                    # model.onnx + model.torchscript.pt
    linreg-export models/example --format pt2 --force

Every export is checked: torch eager, each exported file and onnxruntime predict the same rows
(held-out rows when the manifest has them, else seeded synthetic rows, plus 1 row and a large
batch), the errors go into the manifest, and the export fails above the tolerance. Files are
written to temporaries and renamed into place only when all of them pass.

Exporter choice (torch 2.13): ONNX goes through the dynamo exporter (``dynamo=True``), torch's
default since 2.9 and the maintained path; the TorchScript-based one is deprecated and warns.
For one ``nn.Linear`` both give a single ``Gemm``; dynamo's needs onnxscript (the ``train``
extra). TorchScript is deprecated in 2.11+: we still produce it for those who need it, silence its
deprecation warnings, and turn a refusal into a clear error pointing at ``--format pt2``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from serve.core.columns import ColumnSpec, read_specs
from serve.core.errors import ModelError, first_line
from serve.core.graph import CONTRIBUTIONS
from serve.core.manifest import read_manifest, record_artifact, verify_artifact, write_manifest
from trainer.config import SETTINGS
from trainer.encode import manifest_na_values
from trainer.formula import formula_of
from trainer.model import LinearRegression, model_from_state_dict
from trainer.onnx_tabular import INTERVAL_OUTPUTS, Intervals, needs_opset, tabular_graph
from trainer.parity import (
    NUMERIC_CORE_NOTE,
    ExportError,
    check_parity,
    contribution_parity,
    design,
    interval_parity,
    parity,
    parity_rows,
    quiet_torch,
    tabular_loader,
    tabular_parity_rows,
)
from trainer.stats import INFERENCE

FORMATS = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt", "pt2": "model.pt2"}
DEFAULT_OPSET = 18
ONNX_EXPORTERS = ("linreg", "torch")


def load_trained(folder: str | Path) -> tuple[LinearRegression, dict[str, Any]]:
    """The model and manifest of a folder made by linreg-train, checked against each other."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(f"{folder}: no such model folder")
    manifest = read_manifest(folder)
    pt = folder / "model.pt"
    if not pt.is_file():
        raise ModelError(f"{pt}: no such file; train the model first (linreg-train)")
    verify_artifact(manifest, folder, "model.pt")
    try:
        state = torch.load(pt, weights_only=True, map_location="cpu")
    except Exception as e:  # torch raises many types for a corrupt or foreign file
        raise ModelError(f"{pt}: not a readable state_dict ({first_line(e, 120)})") \
            from None
    if not isinstance(state, dict) or not isinstance(state.get("linear.weight"), torch.Tensor) \
            or set(state) - {"linear.weight", "linear.bias"}:
        raise ModelError(f"{pt}: not a linreg state_dict (expected the tensors 'linear.weight' "
                         "and optionally 'linear.bias')")
    m = manifest.get("model", {})
    weight = state["linear.weight"]
    expected = (m.get("n_targets"), m.get("n_features"))
    if tuple(weight.shape) != expected or ("linear.bias" in state) != bool(m.get("bias")) \
            or str(weight.dtype).removeprefix("torch.") != m.get("dtype") \
            or len(manifest.get("features", [])) != weight.shape[1] \
            or len(manifest.get("targets", [])) != weight.shape[0]:
        raise ModelError(f"{pt}: does not match model.json (weight {tuple(weight.shape)} "
                         f"{weight.dtype}, bias {'linear.bias' in state}; manifest says "
                         f"{expected[0]} target(s) x {expected[1]} feature(s), {m.get('dtype')}, "
                         f"bias {m.get('bias')})")
    if not all(bool(torch.isfinite(t).all()) for t in state.values()):
        raise ModelError(f"{pt}: holds NaN or infinite weights; this model cannot predict "
                         "(train it again, e.g. with a smaller --lr or --standardize)")
    try:
        return model_from_state_dict(state).eval(), manifest
    except RuntimeError as e:  # e.g. a bias of the wrong shape
        raise ModelError(f"{pt}: not a linreg state_dict ({first_line(e)})") from None


def export(folder: str | Path, *, formats: Sequence[str] = ("onnx", "torchscript"),
           opset: int | None = None, force: bool = False,
           intervals: float | None = None, contributions: bool = False,
           onnx_exporter: str = "linreg") -> dict[str, Any]:
    """Write the requested formats into ``folder``, check parity, update the manifest.

    ``opset`` None: 18, or 19 for a model with categorical columns (string ``Equal``).
    ``intervals`` (a level such as 0.95) adds prediction and mean intervals to model.onnx;
    ``contributions`` adds each term's contribution (:mod:`trainer.contributions`).
    ``onnx_exporter``: ``linreg`` builds the graph itself (one ``Gemm``, with the encoding and
    the intervals when there are any: milliseconds); ``torch`` runs
    ``torch.onnx.export(dynamo=True)`` (seconds; a plain model without intervals only)."""
    if onnx_exporter not in ONNX_EXPORTERS:
        raise ExportError(f"--onnx-exporter {onnx_exporter!r}: use one of "
                          f"{', '.join(ONNX_EXPORTERS)}")
    folder = Path(folder)
    model, manifest = load_trained(folder)
    specs = read_specs(manifest, folder / "model.json")
    if "onnx" in formats:
        manifest.pop("intervals", None)  # what this export writes, nothing older
        manifest.pop("contributions", None)
    iv = _intervals(folder, manifest, intervals) if intervals is not None else None
    for flag, asked in (("--intervals", iv is not None), ("--contributions", contributions)):
        if asked and "onnx" not in formats:
            raise ExportError(f"{flag}: its outputs go into model.onnx; add --format onnx")
    if onnx_exporter == "torch" and (specs or iv or contributions) and "onnx" in formats:
        raise ExportError("--onnx-exporter torch exports the numeric core only: this model's "
                          "encoding, intervals and contributions are built by linreg's own "
                          "exporter (drop --onnx-exporter)")
    share = _contributions(model, manifest, specs) if contributions else None
    lowest = needs_opset(specs) if specs else 13
    if opset is None:
        opset = max(DEFAULT_OPSET, lowest)
    elif opset < lowest and "onnx" in formats:
        raise ExportError(f"--opset {opset}: this model's categorical columns need opset "
                          f"{lowest} or later (Equal on strings); drop --opset or pass {lowest}")
    elif onnx_exporter == "linreg" and "onnx" in formats:
        import onnx

        if opset > (highest := onnx.defs.onnx_opset_version()):
            raise ExportError(f"--opset {opset}: onnx {onnx.__version__} knows opsets up to "
                              f"{highest}; choose one from {lowest} to {highest} (or drop "
                              f"--opset: {max(DEFAULT_OPSET, lowest)})")
    for fmt in formats:
        if fmt not in FORMATS:
            raise ExportError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
        if (folder / FORMATS[fmt]).exists() and not force:
            raise ExportError(f"{folder / FORMATS[fmt]}: already exists; pass --force to overwrite it")
    raw_rows = tabular_parity_rows(manifest, specs) if specs else None
    rows = parity_rows(folder, manifest) if specs is None else \
        [design(raw, specs, manifest) for raw in raw_rows]
    writers = {"onnx": _write_onnx, "torchscript": _write_torchscript, "pt2": _write_pt2}
    results = {}
    with _temporaries(folder, [FORMATS[f] for f in formats]) as tmp:
        for fmt in formats:
            if fmt == "onnx" and onnx_exporter == "linreg":  # the graph: encoding, Gemm, ...
                info = _write_tabular_onnx(model, manifest, specs, tmp[FORMATS[fmt]], opset, iv,
                                           share)
                predict, bounds, run = tabular_loader(tmp[FORMATS[fmt]], specs, manifest)
                info["parity"] = parity(model, fmt, predict, raw_rows or rows, rows, manifest)
                if iv is not None:
                    info["intervals"] = {**manifest["intervals"], "parity": interval_parity(
                        bounds, raw_rows or rows, rows, iv, model, manifest)}
                if share is not None:
                    info["contributions"] = {**manifest["contributions"],
                                             "parity": contribution_parity(
                        run, raw_rows or rows, rows, share, manifest)}
            else:
                info = writers[fmt](model, manifest, tmp[FORMATS[fmt]], opset)
                info["parity"] = check_parity(model, fmt, tmp[FORMATS[fmt]], rows, manifest)
                if specs:
                    info["input"] = {"encoded_matrix": len(manifest["features"]),
                                     "note": NUMERIC_CORE_NOTE}
            results[fmt] = info
        for name, path in tmp.items():  # every file passed: rename them all into place
            os.replace(path, folder / name)
    for fmt, info in results.items():
        record_artifact(manifest, folder, FORMATS[fmt])
        manifest.setdefault("exports", {})[fmt] = {"file": FORMATS[fmt], **info}
    write_manifest(folder, manifest)
    return manifest


@contextlib.contextmanager
def _temporaries(folder: Path, names: list[str]) -> Iterator[dict[str, Path]]:
    """Temporary paths beside the final ones; whatever is left of them is removed at the end."""
    temps = {n: folder / f".{n}.{os.getpid()}.tmp" for n in names}
    try:
        yield temps
    except OSError as e:
        raise ModelError(f"{folder}: cannot write the export ({e.strerror or e})") from None
    finally:
        for p in temps.values():
            if p.exists():
                p.unlink()


# ---------------------------------------------------------------------------------- writers


def _example(model: LinearRegression) -> torch.Tensor:
    # Two or more rows: a batch of 0 or 1 may be specialised to a constant by torch.export.
    w = model.linear.weight
    return torch.zeros((3, w.shape[1]), dtype=w.dtype)


def _dynamic_batch() -> dict[str, dict[int, Any]]:
    return {"x": {0: torch.export.Dim("batch")}}


def _write_onnx(model, manifest, path: Path, opset: int) -> dict[str, Any]:
    import onnx

    with quiet_torch():
        try:
            program = torch.onnx.export(model, (_example(model),), dynamo=True, verbose=False,
                                        input_names=["features"], output_names=["prediction"],
                                        dynamic_shapes=_dynamic_batch(), opset_version=opset,
                                        external_data=False)
        except Exception as e:
            raise ExportError(f"ONNX export failed with torch {torch.__version__} at opset "
                              f"{opset}: {first_line(e, 200)}") from None
    proto = program.model_proto
    written = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if written != opset:
        raise ExportError(f"--opset {opset}: torch {torch.__version__} wrote opset {written} "
                          "instead; choose an opset it supports (e.g. 18, the default)")
    _save_onnx(proto, manifest, path)
    return {"opset": opset, "exporter": "torch.onnx.export(dynamo=True)",
            "torch_version": torch.__version__, "onnx_version": onnx.__version__,
            "input": {"name": "features", "shape": ["batch", len(manifest["features"])]},
            "output": {"name": "prediction", "shape": ["batch", len(manifest["targets"])]}}


def _save_onnx(proto, manifest: dict[str, Any], path: Path) -> None:
    """Metadata, producer, the checker, then one self-contained file (no external data): the
    same for every ONNX file linreg writes."""
    import onnx

    for key, value in onnx_metadata(manifest).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name, proto.producer_version = "linreg", manifest.get("linreg_version", "")
    proto.doc_string = f"linreg linear regression {manifest.get('name', '')}"
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"the exported ONNX model fails onnx.checker: {e}") from None
    onnx.save_model(proto, path)


def onnx_metadata(manifest: dict[str, Any]) -> dict[str, str]:
    """The ``metadata_props`` of model.onnx: names and key facts, as strings (ONNX's type)."""
    m, t = manifest["model"], manifest.get("training", {})
    columns = manifest.get("columns")
    tabular = {} if not columns else {  # raw columns in: what each input is and how it is encoded
        "linreg.inputs": "columns",
        "linreg.columns": json.dumps(columns),
        "encoded_names": json.dumps(manifest["features"]),
    }
    inputs = [c["name"] for c in columns] if columns else manifest["features"]
    if columns:  # the texts read as a blank (model.onnx maps them in categorical columns)
        tabular["linreg.na_values"] = json.dumps(manifest_na_values(manifest))
    if manifest.get("formula"):  # the model's formula, and the scale it predicts on
        tabular["linreg.formula"] = manifest["formula"]["formula"]
        tabular["linreg.response"] = manifest["formula"]["response"]
    if manifest.get("intervals"):  # extra outputs beside prediction
        tabular["linreg.intervals"] = json.dumps(manifest["intervals"])
    if manifest.get("contributions"):  # the terms of the last output, and the baseline
        tabular["linreg.contributions"] = json.dumps(manifest["contributions"])
    return {
        "linreg.schema_version": str(manifest["schema_version"]),
        "feature_names": json.dumps(inputs),
        "target_names": json.dumps(manifest["targets"]),
        **tabular,
        "model_name": str(manifest.get("name", "")),
        "dtype": m["dtype"],
        "n_features": str(len(inputs)),
        "n_targets": str(m["n_targets"]),
        "bias": json.dumps(m["bias"]),
        "normalization": "folded into the weights" if manifest.get("normalization") else "none",
        "training": json.dumps({k: t.get(k) for k in ("solver", "epochs_run", "lr", "seed",
                                                      "device", "torch_version")}),
        "metrics": json.dumps({k: v.get("mse") for k, v in manifest.get("metrics", {}).items()}),
        "created": str(manifest.get("created", "")),
    }


def _write_torchscript(model, manifest, path: Path, opset: int) -> dict[str, Any]:
    with quiet_torch():
        try:
            scripted = torch.jit.script(model)
            scripted.save(str(path))
        except Exception as e:  # a torch that has dropped or refuses TorchScript
            raise ExportError(f"torch {torch.__version__} refuses to produce TorchScript "
                              f"({first_line(e, 160)}); use --format pt2 (torch.export) "
                              "or --format onnx instead") from None
    return {"exporter": "torch.jit.script", "torch_version": torch.__version__}


def _write_pt2(model, manifest, path: Path, opset: int) -> dict[str, Any]:
    with quiet_torch():
        try:
            program = torch.export.export(model, (_example(model),),
                                          dynamic_shapes=_dynamic_batch())
            torch.export.save(program, path)
        except Exception as e:
            raise ExportError(f"torch.export failed: {first_line(e, 200)}") from None
    return {"exporter": "torch.export.export", "torch_version": torch.__version__}


# ---------------------------------------------------------------------------------- parity


def _contributions(model, manifest: dict[str, Any], specs: list[ColumnSpec] | None):
    """What the contributions output needs; its facts go into the manifest (and from there
    into the graph's metadata, ``linreg.contributions``)."""
    from trainer.contributions import contributions_of

    weight, bias = _weights(model)
    share = contributions_of(manifest, specs, weight, bias)
    manifest["contributions"] = share.metadata(manifest["targets"])
    return share


def _weights(model) -> tuple[np.ndarray, np.ndarray | None]:
    weight = model.linear.weight.detach().cpu().numpy()
    bias = model.linear.bias.detach().cpu().numpy() if model.linear.bias is not None else None
    return weight, bias


def _write_tabular_onnx(model, manifest, specs: list[ColumnSpec] | None, path: Path,
                        opset: int, iv: Intervals | None = None,
                        share: Any = None) -> dict[str, Any]:
    weight, bias = _weights(model)
    if clash := {s.name for s in specs or []} & {"prediction", *INTERVAL_OUTPUTS,
                                                 CONTRIBUTIONS}:
        raise ExportError(f"a column named {sorted(clash)[0]!r} clashes with the model's "
                          "outputs; rename it and train again")
    proto = tabular_graph(specs, weight, bias, dtype=manifest["model"]["dtype"], opset=opset,
                          intervals=iv, na=manifest_na_values(manifest) if specs else (),
                          formula=formula_of(manifest), contributions=share)
    _save_onnx(proto, manifest, path)
    import onnx

    return {"opset": opset, "exporter": "linreg (onnx.helper: encoding + Gemm)" if specs else
            "linreg (onnx.helper: Gemm)",
            "onnx_version": onnx.__version__,
            "inputs": [{"name": s.name, "shape": ["batch", 1],
                        "type": "string" if s.kind == "categorical" else
                        manifest["model"]["dtype"]} for s in specs] if specs else
            [{"name": "features", "shape": ["batch", len(manifest["features"])],
              "type": manifest["model"]["dtype"]}],
            "output": {"name": "prediction", "shape": ["batch", len(manifest["targets"])]},
            "outputs": ["prediction", *(INTERVAL_OUTPUTS if iv else ()),
                        *([CONTRIBUTIONS] if share is not None else [])]}


def _intervals(folder: Path, manifest: dict[str, Any], level: float) -> Intervals:
    """What the interval outputs need, from the training's statistics (``inference.npz``)."""
    from trainer.stats import Distribution

    if not SETTINGS["confidence"].contains(level):  # the same range as --confidence
        raise ExportError(f"--intervals {level}: a level in {SETTINGS['confidence'].describe()},"
                          " e.g. 0.95")
    stats = manifest.get("statistics") or []
    path = folder / INFERENCE
    if not stats and "streamed" in (manifest.get("training") or {}):
        from trainer.stats import STREAMED_NO_STATISTICS

        raise ExportError(f"{folder}: no covariance of the estimates to build intervals from "
                          f"({STREAMED_NO_STATISTICS})")
    if not stats or not path.is_file():
        why = "; ".join(f"{k}: {v}" for k, v in (stats[0].get("not_defined", {}).items()
                                                  if stats else []) if k == "std_err")
        raise ExportError(f"{folder}: no covariance of the estimates to build intervals from "
                          f"({why or 'trained by an older linreg: train it again'})")
    verify_artifact(manifest, folder, INFERENCE)
    with np.load(path, allow_pickle=False) as z:
        cov, sigma = z["cov"], z["sigma"]
    p = len(manifest["features"]) + (1 if manifest["model"]["bias"] else 0)
    if cov.shape != (len(manifest["targets"]), p, p) or sigma.shape != (cov.shape[0],):
        raise ExportError(f"{path}: shapes {cov.shape}, {sigma.shape} do not match the model")
    entry = stats[0]
    try:
        df = entry["df_resid"]
        dist = Distribution() if entry.get("distribution") == "normal" else Distribution(df)
        quantile = float(dist.ppf(0.5 + level / 2))
        if not (isinstance(df, int) and df > 0 and math.isfinite(quantile)):
            raise ValueError(df)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ExportError(f"{folder}/model.json: field 'statistics' is malformed; train the "
                          "model again") from None
    manifest["intervals"] = {"level": level, "distribution": entry.get("distribution", "t"),
                             "df_resid": entry["df_resid"], "cov_type": entry["cov_type"],
                             "quantile": quantile, "outputs": list(INTERVAL_OUTPUTS)}
    return Intervals(cov, sigma, quantile)


