"""``linreg-train``, and the training side's console scripts by name (``linreg-summary``,
``linreg-synth`` and ``linreg-export`` live in :mod:`trainer.commands`).

    linreg-synth data/synth.csv --samples 10000 --features 8 --targets 2
    linreg-train data/synth.csv --target y0 --target y1 --standardize --val-fraction 0.2
    linreg-train tutorial.csv --epochs 2000 --lr 0.01 --init zeros      # the tutorial, exactly
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from serve.core.columns import NA_VALUES
from serve.core.commands import CONTEXT, OneLineErrors, ProcessCount, stopped
from serve.core.errors import CellError, DataError
from serve.core.imports import without_pandas
from serve.core.progress import Progress
from serve.version import __version__
from trainer.commands import (  # noqa: F401  (the console scripts, by their names here)
    export_entry,
    export_main,
    needs_train_extra,
    summary_main,
    synth_main,
)
from trainer.config import (
    CHOICES,
    LOST_RANK,
    SETTINGS,
    AlphaGrid,
    ByteSize,
    ImputeType,
    InitType,
    TrainConfig,
    TrainingError,
)
from trainer.report import print_summary


def _names(values: tuple[str, ...]) -> list[str]:
    """Repeatable and comma-separated: ``--target a --target b`` or ``--target a,b``."""
    return [n.strip() for v in values for n in v.split(",") if n.strip()]


def _range(name: str) -> click.ParamType:
    return SETTINGS[name].click_type()


@click.command("linreg-train", cls=OneLineErrors, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="linreg")
@click.argument("data", type=click.Path(path_type=Path), required=False)
@click.option("--target", "targets", multiple=True, help="Target column (repeatable, or a,b). "
              "Default: the last column.")
@click.option("--features", "features", multiple=True, help="Feature columns (repeatable, or "
              "a,b). Default: every column but the targets and --exclude.")
@click.option("--exclude", "exclude", multiple=True, help="Columns left out of the default "
              "features, e.g. ids or text (repeatable, or a,b).")
@click.option("--categorical", "categorical", multiple=True, help="Columns to treat as "
              "categorical even if their values read as numbers, e.g. zip codes (repeatable, "
              "or a,b). Columns holding text are categorical anyway.")
@click.option("--impute", type=ImputeType(), default=None, help="Fill blanks (and NaN) in "
              "numeric columns with a value learned from the training rows. Default: a blank "
              "is an error. Blanks in categorical columns are a level of their own.")
@click.option("--missing-indicator", is_flag=True, help="With --impute: add a 0/1 column "
              "per numeric column that had blanks in training.")
@click.option("--max-levels", type=_range("max_levels"), default=1000, show_default=True,
              help="Refuse a categorical column with more distinct values (an id?).")
@click.option("--unknown", type=click.Choice(CHOICES["unknown"]), default="error",
              show_default=True, help="A level not seen in training, at prediction time: an "
              "error, or predicted as the reference level.")
@click.option("--reference", "reference", multiple=True, metavar="COLUMN=LEVEL",
              help="A categorical column's reference level (repeatable), e.g. city=Paris. "
              "Default: the first level in sorted order.")
@click.option("--formula", default=None, metavar="'Y ~ TERMS'",
              help="The model as a formula (patsy's, as statsmodels takes it): numeric columns, "
              "C(column), interactions a:b and a*b, I(...) arithmetic, np.log, np.log1p, "
              "np.exp, np.sqrt, np.abs, center(), standardize(), poly(x, degree), "
              "bs(x, df=...); -1 for no intercept. It is compiled into model.onnx, which takes "
              "the raw columns. With --impute, a blank number is filled before the formula "
              "reads it.")
@click.option("--na-values", "na_values", multiple=True, metavar="TEXT,...",
              help="Cell texts that mean a blank, in training and in the exported model "
              "(repeatable, or a,b; replaces the default; '' for none but the empty cell). "
              "Default: what R and pandas write: NA, N/A, n/a, NaN, nan, NULL, null, None, "
              "<NA>, #N/A, ...")
@click.option("--missing-target", type=click.Choice(CHOICES["missing_target"]),
              default="drop", show_default=True, help="A row whose target is blank: dropped "
              "(the count is printed and kept in model.json), or an error.")
@click.option("--cov", type=click.Choice(CHOICES["cov"]), default="nonrobust",
              show_default=True, help="Covariance of the estimates for the statistics: "
              "classical, or heteroskedasticity-robust HC0-HC3 (as statsmodels).")
@click.option("--confidence", type=_range("confidence"), default=0.95, show_default=True,
              help="Level of the coefficients' confidence intervals.")
@click.option("--summary", is_flag=True, help="Print a statsmodels-like table of the "
              "estimates (std err, t, P>|t|, interval); later: linreg-summary MODEL_DIR.")
@click.option("--val-fraction", type=_range("val_fraction"), default=None,
              help="Hold out this fraction of rows, in (0, 1), seeded, for validation metrics.")
@click.option("--val-data", type=click.Path(path_type=Path), default=None,
              help="Validation rows from another file, folder or glob (streamed training).")
@click.option("--batch-rows", type=click.IntRange(min=1), default=None,
              help="Stream DATA in chunks of this many rows (default 65,536 when streaming): "
              "memory stays flat whatever the size. Streaming is also used for a folder or glob, "
              "--nproc, --val-data, or data over --max-memory.")
@click.option("--max-memory", type=ByteSize(), default=None, metavar="SIZE",
              help="Memory budget for the data (e.g. 2G, 512M). Under it, DATA is read once and "
              "kept; over it, it is streamed and read again each epoch. Default: a quarter of "
              "this machine's memory, at most 4G.")
@click.option("--nproc", type=ProcessCount(), default=1, show_default=True,
              help="Train in this many local processes with torch.distributed (gloo on the "
              "CPU, nccl on CUDA); each reads its share of DATA's files or row groups.")
@click.option("--epochs", type=_range("epochs"), default=1000, show_default=True)
@click.option("--lr", type=_range("lr"), default=None,
              help="Learning rate. Default: the optimiser's own, 0.01 for sgd, 0.001 for adam "
              "(torch's), 1 for lbfgs (torch's).")
@click.option("--momentum", type=_range("momentum"), default=0.0, show_default=True)
@click.option("--weight-decay", type=_range("weight_decay"), default=0.0, show_default=True)
@click.option("--batch-size", type=_range("batch_size"), default=0, show_default=True,
              help="0: full batch (the tutorials); N: shuffled mini-batches of N rows.")
@click.option("--init", type=InitType(), default="default", show_default=True,
              help="nn.Linear's own init under --seed, zeros, or a number for every parameter.")
@click.option("--no-bias", is_flag=True, help="Fit H(x) = Wx with no intercept.")
@click.option("--optimizer", type=click.Choice(CHOICES["optimizer"]), default="sgd",
              show_default=True, help="torch.optim's SGD, Adam, or L-BFGS (full batch, with a "
              "line search: use --lr 1).")
@click.option("--loss", type=click.Choice(CHOICES["loss"]), default="mse", show_default=True,
              help="Mean squared error (the tutorials) or torch's HuberLoss (robust to "
              "outliers; with --huber-delta).")
@click.option("--huber-delta", type=_range("huber_delta"), default=1.0, show_default=True,
              help="torch's HuberLoss threshold, in target units (SGD).")
@click.option("--huber-epsilon", type=_range("huber_epsilon"), default=None,
              help="With --loss huber --solver lstsq: scikit-learn's HuberRegressor, the scale "
              "estimated jointly; 1.35 is its default (95% efficiency on normal data).")
@click.option("--penalty", type=click.Choice(CHOICES["penalty"]), default="none",
              show_default=True, help="scikit-learn's ElasticNet objective: (1/2n)·‖y − Xw − b‖²"
              " + α·R·‖w‖₁ + ½·α·(1 − R)·‖w‖² (l2: R = 0, l1: R = 1); the intercept is not "
              "penalised.")
@click.option("--alpha", type=AlphaGrid(), default=1.0, show_default=True,
              help="The penalty's strength α (with --penalty); with --cv, the grid to choose "
              "from: a,b,c or a log grid lo:hi:n.")
@click.option("--cv", type=click.IntRange(min=2), default=None, metavar="K",
              help="Choose --alpha from its grid by K-fold cross-validation (the least mean "
              "validation MSE, as RidgeCV/LassoCV/ElasticNetCV), then fit every row at it.")
@click.option("--l1-ratio", type=_range("l1_ratio"), default=0.5, show_default=True,
              help="R, elasticnet's mix of l1 and l2.")
@click.option("--sample-weight", default=None, metavar="COLUMN", help="Weigh each row's loss "
              "by this column (weighted least squares for --solver lstsq).")
@click.option("--lr-schedule", type=click.Choice(CHOICES["lr_schedule"]), default="constant",
              show_default=True, help="torch's StepLR, CosineAnnealingLR (over --epochs) or "
              "ReduceLROnPlateau; the rate of each epoch goes into history.csv.")
@click.option("--lr-step-size", type=_range("lr_step_size"), default=100, show_default=True,
              help="step: epochs between decays.")
@click.option("--lr-gamma", type=_range("lr_gamma"), default=0.1, show_default=True,
              help="step and plateau: the factor of each decay.")
@click.option("--lr-patience", type=_range("lr_patience"), default=10, show_default=True,
              help="plateau: epochs without improvement (of the validation cost, else the "
              "training cost) before a decay.")
@click.option("--early-stopping", is_flag=True, help="Stop when the validation cost has not "
              "improved for --patience epochs, and keep the best epoch's parameters (needs "
              "--val-fraction).")
@click.option("--patience", type=_range("patience"), default=10, show_default=True)
@click.option("--min-delta", type=_range("min_delta"), default=0.0, show_default=True,
              help="The least decrease of the validation cost that counts as an improvement.")
@click.option("--init-from", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Warm start from a trained model folder (same features and targets).")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=None, metavar="N",
              help="Keep a resumable checkpoint in OUT.checkpoint/ every N epochs (removed "
              "when the run ends).")
@click.option("--resume", type=click.Path(file_okay=False, path_type=Path), default=None,
              metavar="DIR", help="Continue an interrupted run from its checkpoint folder, with "
              "that run's data and settings (DATA and training flags may be left out).")
@click.option("--seed", type=_range("seed"), default=1, show_default=True)
@click.option("--standardize", is_flag=True,
              help="Train on standardised features; saved W and b stay in raw units.")
@click.option("--solver", type=click.Choice(CHOICES["solver"]), default="sgd", show_default=True,
              help="SGD (the tutorials' loop) or exact least squares.")
@click.option("--tol", type=_range("tol"), default=None,
              help="Stop when an epoch improves the cost by less than this.")
@click.option("--device", type=click.Choice(CHOICES["device"]), default="auto",
              show_default=True)
@click.option("--dtype", type=click.Choice(CHOICES["dtype"]), default="float32",
              show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Artifact folder. Default: models/<data file stem>.")
@click.option("--force", is_flag=True, help="Replace an existing model folder (only one "
              "linreg wrote).")
@click.option("--plot", is_flag=True, help="Also write the plots (theta, loss, fit, ...).")
@click.option("--log-every", type=_range("log_every"), default=100, show_default=True,
              help="Print a log line every N epochs, and one for the saved model (0: never).")
@click.option("--log-before-step", is_flag=True, help="Log the parameters each epoch's cost "
              "was computed with (before its step), as the bias-free tutorial does.")
@click.option("--mlflow", "mlflow", is_flag=True, help="Log the run to MLflow tracking once "
              "the model is saved: the settings, the cost per epoch, the final metrics and "
              "statistics, the artifact folder (needs the mlflow extra).")
@click.option("--mlflow-uri", default=None, metavar="URI", help="With --mlflow: the tracking "
              "URI. Default: MLFLOW_TRACKING_URI, else sqlite:///mlruns.db (no server).")
@click.option("--mlflow-experiment", default="linreg", show_default=True, metavar="NAME",
              help="With --mlflow: the experiment (made if it is new).")
@click.option("--mlflow-register", default=None, metavar="NAME", help="With --mlflow: also "
              "log the MLflow Model (linreg-export --format mlflow) and register it as a new "
              "version of NAME in MLflow's model registry.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
def train_main(data: Path, targets: tuple[str, ...], features: tuple[str, ...],
               exclude: tuple[str, ...], categorical: tuple[str, ...], impute: str | None,
               missing_indicator: bool, max_levels: int, unknown: str,
               reference: tuple[str, ...], formula: str | None, na_values: tuple[str, ...],
               missing_target: str,
               cov: str,
               confidence: float, summary: bool, optimizer: str, loss: str,
               huber_delta: float, huber_epsilon: float | None, penalty: str,
               alpha: float | tuple[float, ...], cv: int | None, l1_ratio: float,
               sample_weight: str | None, lr_schedule: str, lr_step_size: int,
               lr_gamma: float, lr_patience: int, early_stopping: bool, patience: int,
               min_delta: float, init_from: Path | None, checkpoint_every: int | None,
               resume: Path | None,
               val_fraction: float | None, val_data: Path | None, batch_rows: int | None,
               max_memory: int | None, nproc: int, epochs: int, lr: float,
               momentum: float, weight_decay: float, batch_size: int, init: str | float,
               no_bias: bool, seed: int, standardize: bool, solver: str, tol: float | None,
               device: str, dtype: str, out: Path | None, force: bool, plot: bool,
               log_every: int, log_before_step: bool, mlflow: bool, mlflow_uri: str | None,
               mlflow_experiment: str, mlflow_register: str | None, quiet: bool) -> None:
    """Fit a linear regression to DATA (CSV with a header, Parquet, .npy or .npz)."""
    from trainer.encode import EncodeConfig
    from trainer.runs import checkpoint_dir, resume_settings

    if resume is not None:  # the interrupted run's data and settings
        settings = resume_settings(resume)
        data = Path(settings.pop("data_path"))
        settings["resume"] = resume
        # ... and how it streamed, if it did (the same shares and chunks: the same run)
        val_data = Path(settings["val_data"]) if settings["val_data"] is not None else None
        batch_rows, max_memory, nproc = (settings[k] for k in ("batch_rows", "max_memory",
                                                               "nproc"))
        for key in ("val_data", "batch_rows", "max_memory", "nproc"):
            del settings[key]
    elif data is None:
        raise click.UsageError("missing DATA (a CSV, Parquet, .npy or .npz file), or --resume "
                               "DIR")
    else:
        config = TrainConfig(epochs=epochs, lr=lr, momentum=momentum,
                             weight_decay=weight_decay, batch_size=batch_size, init=init,
                             bias=not no_bias, seed=seed, standardize=standardize,
                             solver=solver, tol=tol, device=device, dtype=dtype,
                             log_every=log_every, log_before_step=log_before_step,
                             optimizer=optimizer, loss=loss, huber_delta=huber_delta,
                             huber_epsilon=huber_epsilon,
                             penalty=penalty,
                             alpha=alpha[0] if isinstance(alpha, tuple) else alpha,
                             alphas=alpha if isinstance(alpha, tuple) else (), cv=cv or 0,
                             l1_ratio=l1_ratio,
                             lr_schedule=lr_schedule, lr_step_size=lr_step_size,
                             lr_gamma=lr_gamma, lr_patience=lr_patience,
                             early_stopping=early_stopping, patience=patience,
                             min_delta=min_delta)
        settings = dict(out=out, config=config, targets=_names(targets),
                        features=_names(features), exclude=_names(exclude),
                        encoding=EncodeConfig(tuple(_names(categorical)), impute,
                                              missing_indicator, max_levels, unknown,
                                              missing_target, tuple(reference),
                                              tuple(_names(na_values)) if na_values
                                              else NA_VALUES, formula),
                        cov=cov, confidence=confidence, sample_weight=sample_weight,
                        init_from=init_from, val_fraction=val_fraction, plot=plot,
                        checkpoint_every=checkpoint_every)
    config = settings["config"]
    tracking = _tracking(mlflow, mlflow_uri, mlflow_experiment, mlflow_register)
    folder_of_checkpoint = resume or (checkpoint_dir(settings["out"] or Path("models") / Path(
        str(data).rstrip("/*")).stem) if settings.get("checkpoint_every") else None)
    try:
        with without_pandas():  # pyarrow would import it (0.2 s) and nothing here needs it
            if nproc > 1 or _streams(data, settings, val_data, batch_rows, max_memory):
                saved = _train_streamed(data, settings, nproc=nproc, val_data=val_data,
                                        batch_rows=batch_rows, max_memory=max_memory,
                                        summary=summary, force=force, quiet=quiet)
            else:
                saved = _train_in_memory(data, settings, summary=summary, force=force,
                                         quiet=quiet)
    except CellError as e:  # a target's cell: say which column is the target, and the way out
        raise CellError(_about_the_target(e, data, settings["targets"]), e.column) from None
    except KeyboardInterrupt as e:  # Ctrl-C, SIGTERM: say how to resume, if it can be
        if folder_of_checkpoint is not None and (folder_of_checkpoint / "checkpoint.pt").is_file():
            raise stopped(e, f"; the last checkpoint is in {folder_of_checkpoint}: continue "
                             f"with linreg-train --resume {folder_of_checkpoint}") from None
        raise
    if saved is not None:  # this process wrote the folder (rank 0 of several): log it
        _track(*saved, tracking, quiet)  # (MLflow needs pandas: out of the block above)


def _about_the_target(e: CellError, data: Path, targets: list[str]) -> str:
    """A bad cell's message, told that its column is the target when it is: the default one
    is named (a user may not know it is the last column), and a blank one is pointed to
    --missing-target drop."""
    default = not targets and e.column == _last_column(data)
    message = str(e)
    if (default or e.column in targets) and message.endswith(": missing value"):
        message += " (--missing-target drop leaves out the rows whose target is blank)"
    if default:
        message += (f"; {e.column!r} is the target: the last column, by default (choose the "
                    "target with --target NAME)")
    return message


def _last_column(data: Path) -> str | None:
    from trainer.dataset import Dataset

    try:
        return Dataset.open(data).columns[-1]
    except DataError:
        return None


def _tracking(on: bool, uri: str | None, experiment: str, register: str | None) -> Any:
    """--mlflow's settings, or None; the other --mlflow-* options need it."""
    from trainer.tracking import Tracking

    if not on:
        given = [f for f, v in (("--mlflow-uri", uri), ("--mlflow-register", register)) if v]
        if given:
            raise click.UsageError(f"{given[0]} is for --mlflow; add --mlflow")
        return None
    return Tracking(uri, experiment, register)


def _track(folder: Path, manifest: dict, tracking: Any, quiet: bool) -> None:
    """Log the saved run to MLflow; a failure is one warning line (the model is saved)."""
    from trainer.tracking import TrackingError, log_run

    if tracking is None:
        return
    try:
        record = log_run(folder, manifest, tracking)
    except TrackingError as e:
        click.echo(f"linreg-train: warning: the run was not logged ({e}); the model is saved "
                   f"in {folder}", err=True)
        return
    if not quiet:
        registered = record.get("registered")
        click.echo(f"MLflow: run {record['run_id']} in experiment {record['experiment']!r} at "
                   f"{record['tracking_uri']}" + (f"; registered {registered['name']!r} "
                                                  f"version {registered['version']}"
                                                  if registered else ""))


def _train_in_memory(data: Path, settings: dict, *, summary: bool, force: bool,
                     quiet: bool) -> tuple[Path, dict]:
    """The fit of a table that fits in memory, with its progress bars."""
    from serve.core.tables import estimate_rows
    from trainer.train import train

    config = settings["config"]
    size = data.stat().st_size if data.is_file() else 0
    if not quiet and size > 64 << 20:
        click.echo(f"Reading {data} ({size / 2**20:,.0f} MiB) ...", err=True)
    reading = Progress(estimate_rows(data) if size else None, desc=f"reading {data.name}",
                       unit="rows", quiet=quiet)
    bar = Progress(config.epochs if config.solver == "sgd" else None, desc="training",
                   unit="epoch", quiet=quiet)

    def fitting(done: float) -> None:
        reading.close()  # the data is in: its bar ends where the fit's begins
        bar.to(done)

    with reading, bar:
        log = None if quiet or config.log_every == 0 else bar.echo
        folder, manifest = train(data, force=force, log=log, progress=fitting,
                                 read_progress=reading.to, **settings)
    if not quiet:
        print_summary(folder, manifest, default_target=not settings["targets"]
                      and settings["encoding"].formula is None)
    if summary:
        from trainer.stats import summary_text

        click.echo(summary_text(manifest).rstrip("\n"))
    return folder, manifest


def _memory_budget(max_memory: int | None) -> int:
    if max_memory is not None:
        return max_memory
    import os

    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 16 << 30
    return min(4 << 30, total // 4)


def _streams(data: Path, settings: dict, val_data: Path | None, batch_rows: int | None,
             max_memory: int | None) -> bool:
    """Whether DATA is trained streamed: under torchrun, a folder or glob, --batch-rows or
    --val-data asked for, or a Parquet/CSV file over the memory budget."""
    from serve.core.formats import is_many
    from trainer.distributed import under_torchrun
    from trainer.train_streamed import MEMORY_OVERHEAD

    if under_torchrun() or val_data is not None or batch_rows is not None or is_many(data):
        return True
    if not data.is_file():
        return False  # the reader says what is wrong with it
    if data.suffix.lower() not in (".parquet", ".pq", ".csv"):
        return False
    from trainer.dataset import Dataset

    ds = Dataset.open(data)
    return ds.estimated_rows() * len(ds.columns) * 8 * MEMORY_OVERHEAD > \
        _memory_budget(max_memory)


def _train_streamed(data: Path, settings: dict, *, nproc: int, val_data: Path | None,
                    batch_rows: int | None, max_memory: int | None, summary: bool, force: bool,
                    quiet: bool) -> tuple[Path, dict] | None:
    """The streamed (and distributed) fit: start ``--nproc`` processes, or run this rank."""
    from trainer.distributed import join, launch, under_torchrun
    from trainer.fit import resolve_device
    from trainer.train_streamed import train_streamed

    if nproc > 1 and not under_torchrun():
        launch(nproc, _given_args(click.get_current_context(), leave_out="nproc"), _rank)
        return None  # rank 0, one of the processes, logs the run
    config = settings["config"]
    group = join(resolve_device(config.device))
    try:
        bar = Progress(config.epochs if config.solver == "sgd" else None, desc="training",
                       unit="epoch", quiet=quiet or group.rank != 0)
        with bar:
            log = None if quiet or config.log_every == 0 else bar.echo
            folder, manifest = train_streamed(
                data, out=settings["out"], config=config, targets=settings["targets"],
                features=settings["features"], exclude=settings["exclude"],
                val_fraction=settings["val_fraction"], val_data=val_data,
                batch_rows=batch_rows or 65536, max_memory=_memory_budget(max_memory),
                cov=settings["cov"], confidence=settings["confidence"],
                sample_weight=settings["sample_weight"], encoding=settings["encoding"],
                init_from=settings["init_from"], plot=settings["plot"],
                checkpoint_every=settings["checkpoint_every"], resume=settings.get("resume"),
                force=force, log=log, progress=bar.to, group=group)
    except Exception as e:
        if group.distributed:  # name the rank: the launcher shows this line
            from serve.core.errors import LinregError, first_line
            from trainer.distributed import PEER_LOST

            if _collective_error(e) or isinstance(e, TrainingError) and LOST_RANK in str(e):
                PEER_LOST.set()

            what = str(e) if isinstance(e, LinregError) else \
                f"{LOST_RANK} ({first_line(e)})" if _collective_error(e) else \
                f"{type(e).__name__}: {first_line(e)}"
            raise TrainingError(f"rank {group.rank}: {what}") from None
        raise
    finally:
        group.close()
    if manifest is None:  # another rank than 0: rank 0 speaks
        return None
    if not quiet:
        print_summary(folder, manifest, default_target=not settings["targets"]
                      and settings["encoding"].formula is None)
    if summary:
        from trainer.stats import summary_text

        click.echo(summary_text(manifest).rstrip("\n"))
    return folder, manifest


def _rank(argv: list[str]) -> None:
    """What each ``--nproc`` process runs: linreg-train itself, under the launcher's
    environment (it exits with the command's status)."""
    train_main.main(args=argv, prog_name="linreg-train", standalone_mode=True)


def _collective_error(e: BaseException) -> bool:
    """Whether ``e`` is a collective that failed because another rank went away."""
    import torch.distributed as dist

    text = str(e)
    return isinstance(e, getattr(dist, "DistError", ())) or any(
        s in text for s in ("gloo", "NCCL", "Connection closed", "Connection reset"))


def _given_args(ctx: click.Context, *, leave_out: str) -> list[str]:
    """The command line that gave ``ctx``'s values (what was given, not the defaults), less
    one parameter: what each ``--nproc`` process runs."""
    from click.core import ParameterSource

    args: list[str] = []
    opts: list[str] = []
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if param.name == leave_out or ctx.get_parameter_source(param.name) in (
                ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP, None):
            continue
        if isinstance(param, click.Argument):
            args.append(str(value))
        elif getattr(param, "is_flag", False):
            if value:
                opts.append(param.opts[0])
        elif param.multiple:
            for v in value:
                opts += [param.opts[0], str(v)]
        elif isinstance(value, tuple):  # --alpha's grid, as a list of its exact values
            opts += [param.opts[0], ",".join(map(repr, value))]
        else:
            opts += [param.opts[0], str(value)]
    return args + opts


train_entry = needs_train_extra(train_main, ("torch",))
