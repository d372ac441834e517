"""The training side's smaller console scripts: ``linreg-summary`` (a model's statistics as a
table), ``linreg-synth`` (the tutorial's synthetic data) and ``linreg-export`` (ONNX,
TorchScript, ``.pt2``, a Triton repository), and the entry that says in one line when the train
extra is missing. ``linreg-train`` is :mod:`trainer.cli`."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path

import click

from serve.core.commands import CONTEXT, FiniteFloat, OneLineErrors
from serve.version import __version__
from trainer.config import SETTINGS


@click.command("linreg-summary", cls=OneLineErrors, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="linreg")
@click.argument("model_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--compare", "smaller", type=click.Path(file_okay=False, path_type=Path),
              default=None, metavar="SMALLER_DIR", help="Also test MODEL_DIR against a model "
              "nested in it (a subset of its terms, the same rows): the F test of the terms it "
              "adds, as statsmodels' compare_f_test and anova_lm.")
def summary_main(model_dir: Path, smaller: Path | None) -> None:
    """Print the statistics of a trained model (MODEL_DIR made by linreg-train) as a table."""
    from serve.core.errors import ModelError
    from trainer.stats import compare_text, summary_text

    manifest = _with_statistics(model_dir)
    try:
        text = summary_text(manifest)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError):
        raise ModelError(f"{model_dir}/model.json: field 'statistics' is malformed; train the "
                         "model again") from None
    click.echo(text.rstrip("\n"))
    if smaller is not None:
        small = _with_statistics(smaller)
        try:
            text = compare_text(manifest, small, big_name=str(model_dir),
                                small_name=str(smaller))
        except ValueError as e:
            raise ModelError(str(e)) from None
        except (TypeError, KeyError, IndexError, AttributeError):
            raise ModelError(f"{smaller}/model.json: field 'statistics' is malformed; train "
                             "the model again") from None
        click.echo("\n" + text.rstrip("\n"))


def _with_statistics(model_dir: Path) -> dict:
    """A model's manifest, which must hold statistics."""
    from serve.core.errors import ModelError
    from serve.core.manifest import read_manifest

    manifest = read_manifest(model_dir)
    if not manifest.get("statistics") and "streamed" in (manifest.get("training") or {}):
        from trainer.stats import STREAMED_NO_STATISTICS

        raise ModelError(f"{model_dir}: no statistics: {STREAMED_NO_STATISTICS}")
    if not manifest.get("statistics"):
        raise ModelError(f"{model_dir}: no statistics in model.json (trained by an older "
                         "linreg); train it again")
    return manifest


@click.command("linreg-synth", cls=OneLineErrors, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="linreg")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--samples", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--features", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--targets", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--seed", type=SETTINGS["seed"].click_type(), default=0, show_default=True)
@click.option("--noise", type=FiniteFloat(0), default=10.0, show_default=True,
              help="Standard deviation of the noise added to y.")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
def synth_main(out: Path, samples: int, features: int, targets: int, seed: int, noise: float,
               force: bool, quiet: bool) -> None:
    """Write the tutorial's synthetic data set (x ~ N(0, 5²), y = 23.4·x + N(3, 10²), generalised)
    to OUT (.csv, .parquet, .npy or .npz), and the true coefficients to OUT.truth.json."""
    from serve.core.atomic import resolve_output
    from serve.core.errors import OutputExistsError
    from trainer.synth import make_dataset, write_dataset

    final, st = resolve_output(out)
    if st is not None and final.is_file() and not force:  # before generating, not after
        raise OutputExistsError(f"{out}: already exists; pass --force to overwrite it")
    data = make_dataset(samples, features, targets, seed=seed, noise=noise)
    write_dataset(data, out, force=force)
    if not quiet:
        click.echo(f"Wrote {samples} rows x {features} feature(s) + {targets} target(s) to "
                   f"{out} (true coefficients in {out}.truth.json)")


@click.command("linreg-export", cls=OneLineErrors, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="linreg")
@click.argument("model_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--format", "formats", multiple=True,
              type=click.Choice(["onnx", "torchscript", "pt2", "triton", "mlflow"]),
              help="Repeatable. Default: onnx and torchscript. triton: put model.onnx into a "
              "Triton model repository (--repository), exporting it first if needed. mlflow: "
              "write an MLflow Model (--mlflow-dir) around model.onnx, the same way.")
@click.option("--mlflow-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="With --format mlflow: the MLflow Model directory to write (MLmodel with "
              "the onnx and python_function flavours; the loader is linreg's runtime).")
@click.option("--repository", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="With --format triton: the repository folder; writes REPOSITORY/NAME/"
              "config.pbtxt and REPOSITORY/NAME/VERSION/model.onnx (NAME: MODEL_DIR's name).")
@click.option("--model-version", type=click.IntRange(min=1), default=None,
              help="With --format triton: the version folder to write. Default: one above "
              "the highest there (1 for a new model).")
@click.option("--opset", type=click.IntRange(min=13), default=None,
              help="ONNX opset version. Default: 18, or 19 for a model with categorical "
              "columns (it compares strings).")
@click.option("--intervals", type=SETTINGS["confidence"].click_type(), default=None, metavar="LEVEL",
              help="Add outputs prediction_lower/upper (a new observation) and "
              "mean_lower/upper (the mean) at this level, e.g. 0.95, to model.onnx.")
@click.option("--contributions", is_flag=True,
              help="Add an output 'contributions' to model.onnx: each term's share of the "
              "prediction, coefficient x (value - its training mean); with the baseline (the "
              "mean prediction) in the metadata, baseline + their sum = the prediction.")
@click.option("--onnx-exporter", type=click.Choice(["linreg", "torch"]), default="linreg",
              show_default=True, help="Who writes model.onnx: linreg builds the graph itself "
              "(one Gemm, with the encoding and intervals), torch runs torch.onnx.export "
              "(dynamo; slower, a plain model only). Both are checked against torch eager.")
@click.option("--force", is_flag=True, help="Overwrite existing exported files.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
def export_main(model_dir: Path, formats: tuple[str, ...], mlflow_dir: Path | None,
                repository: Path | None,
                model_version: int | None, opset: int | None, intervals: float | None,
                contributions: bool, onnx_exporter: str, force: bool, quiet: bool) -> None:
    """Export MODEL_DIR (made by linreg-train) to ONNX and TorchScript, checking parity."""
    from trainer.export import export

    formats = tuple(dict.fromkeys(formats)) or ("onnx", "torchscript")
    triton = "triton" in formats
    if triton != (repository is not None):
        raise click.UsageError("--format triton and --repository DIR go together")
    if model_version is not None and not triton:
        raise click.UsageError("--model-version is for --format triton")
    mlflow = "mlflow" in formats
    if mlflow != (mlflow_dir is not None):
        raise click.UsageError("--format mlflow and --mlflow-dir DIR go together")
    formats = tuple(f for f in formats if f not in ("triton", "mlflow"))
    if (triton or mlflow) and "onnx" not in formats and not (model_dir / "model.onnx").is_file():
        formats += ("onnx",)  # nothing exported yet: export it now
    manifest = export(model_dir, formats=formats, opset=opset, force=force,
                      intervals=intervals, contributions=contributions,
                      onnx_exporter=onnx_exporter) if formats else None
    if triton:
        from serve.runtime.triton import write_repository

        folder, version = write_repository(
            model_dir, repository, version=model_version, force=force,
            warn=lambda m: click.echo(f"linreg-export: warning: {m}", err=True))
        if not quiet:
            click.echo(f"{folder}: Triton model {folder.name!r} version {version} "
                       f"({folder / version / 'model.onnx'}, {folder / 'config.pbtxt'})")
    if mlflow:
        from trainer.mlflow_export import write_mlflow_model

        write_mlflow_model(model_dir, mlflow_dir, force=force)
        if not quiet:
            click.echo(f"{mlflow_dir}: MLflow Model (onnx and python_function flavours; "
                       f"mlflow.pyfunc.load_model('{mlflow_dir}') predicts as linreg-predict)")
    if not quiet and manifest is not None:
        for fmt in formats:
            info = manifest["exports"][fmt]
            p = info["parity"]
            click.echo(f"{model_dir / info['file']}: {fmt} agrees with the trained model: "
                       f"relative error {p['max_rel_error']:.2g} <= tolerance "
                       f"{p['tolerance']:g} over {sum(p['rows_checked']):,} rows (largest "
                       f"absolute difference {p['max_abs_error']:.2g})")
            if "intervals" in info:
                iv = info["intervals"]
                click.echo(f"  intervals at {iv['level']:g} ({iv['distribution']} quantile "
                           f"{iv['quantile']:.6g}, {iv['cov_type']} covariance): "
                           f"{', '.join(iv['outputs'])}; they agree with the statistics to "
                           f"{iv['parity']['max_rel_error']:.2g}")
            if "contributions" in info:
                c = info["contributions"]
                click.echo(f"  contributions of {len(c['terms'])} term(s) "
                           f"({', '.join(c['terms'][:6])}{', ...' if len(c['terms']) > 6 else ''}"
                           f"); baseline {', '.join(f'{b:.6g}' for b in c['baseline'])}; they "
                           f"add up to the prediction to {c['parity']['sum_max_rel_error']:.2g}")
            if "note" in info.get("input", {}):
                click.echo(f"  note: {model_dir / info['file']} is {info['input']['note']}")


def needs_train_extra(command: click.Command, modules: tuple[str, ...]) -> Callable[[], None]:
    """The console-script entry: in a runtime-only install (``pip install .``), say in one line
    what is missing, even for ``--help``, instead of a traceback on first use."""
    def entry() -> None:
        missing = [m for m in modules if importlib.util.find_spec(m) is None]
        if missing:
            click.echo(f"{command.name}: error: needs the train extra ({', '.join(missing)} "
                       "not installed): pip install 'linreg[train]'", err=True)
            sys.exit(1)
        try:
            command()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
            if not code or _tracks_resources():
                raise
            # The one line is said and every file of ours is closed: leave without the
            # interpreter's teardown, where a C++ thread still running (pyarrow's read-ahead
            # of a file abandoned at a bad cell, torch's pools) can abort the process with
            # "terminate called without an active exception" (seen under load). Not in a
            # process that started --nproc ranks: its semaphores' tracker must see them freed.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return entry


def _tracks_resources() -> bool:
    """Whether multiprocessing's resource tracker runs for this process (it made semaphores:
    the --nproc launcher), which a normal exit lets clean up."""
    tracker = getattr(sys.modules.get("multiprocessing.resource_tracker"), "_resource_tracker",
                      None)
    return getattr(tracker, "_fd", None) is not None


export_entry = needs_train_extra(export_main, ("torch", "onnx", "onnxscript"))
