"""Console scripts of the runtime: ``linreg-predict`` and ``linreg-serve``."""

from __future__ import annotations

import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import click

from serve.core.columns import ON_UNKNOWN
from serve.core.commands import CONTEXT, OneLineErrors, ProcessCount
from serve.core.formats import INPUT_FORMATS, MAX_THREADS, OUTPUT_FORMATS, is_many
from serve.core.imports import without_pandas
from serve.core.progress import Progress
from serve.server.settings import ServerSettings, click_options
from serve.version import __version__


@click.command("linreg-predict", cls=OneLineErrors, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="linreg")
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("input", type=str)
@click.option("-o", "--output", default="-", show_default=True,
              help="Output file (.csv, .parquet, .npy, .jsonl) or - for stdout; an output "
              "folder when INPUT is a folder or glob.")
@click.option("--input-format", type=click.Choice(INPUT_FORMATS), default=None,
              help="Default: by extension (csv for stdin).")
@click.option("--output-format", type=click.Choice(OUTPUT_FORMATS), default=None,
              help="Default: by extension (csv for stdout).")
@click.option("--batch-rows", type=click.IntRange(min=1), default=65536, show_default=True,
              help="Rows per chunk: memory use is bounded by this, not by the file.")
@click.option("--keep", multiple=True, help="Pass this input column through (repeatable, or "
              "a,b), e.g. an id, or the actual target beside its prediction.")
@click.option("--pred-suffix", default=None, help="Suffix of the prediction columns. Default: "
              "none, or _pred when --keep names a target.")
@click.option("--intervals", is_flag=True, help="Also write each target's prediction "
              "interval and the mean's interval (y_lower, y_upper, y_mean_lower, y_mean_upper); "
              "the model needs linreg-export --intervals.")
@click.option("--contributions", is_flag=True, help="Also write each target's baseline (the "
              "mean prediction) and each term's contribution (y_baseline, y_contrib_TERM; they "
              "add up to the prediction); the model needs linreg-export --contributions.")
@click.option("--on-unknown", type=click.Choice(ON_UNKNOWN), default=None,
              help="A cell the model cannot take (a level not seen in training, a blank with "
              "no fill): an error naming it, a NaN prediction for its row (counted on "
              "stderr), or the column's reference level. Default: the model's own "
              "(linreg-train --unknown).")
@click.option("--threads", type=click.IntRange(0, MAX_THREADS), default=None,
              help="onnxruntime threads (0: one per core). Default: picked per batch size.")
@click.option("--engine", type=click.Choice(["local", "dask", "spark"]), default="local",
              show_default=True, help="Where a folder's parts run: here, on Dask (the dask "
              "extra) or on Spark (the spark extra).")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="--engine dask: join this scheduler (tcp://HOST:8786). Default: a local "
              "cluster of --workers processes.")
@click.option("--workers", type=ProcessCount(), default=None,
              help="--engine dask: worker processes of the local cluster (default 2).")
@click.option("--master", default="local[*]", show_default=True,
              help="--engine spark: the Spark master URL (spark-submit's own when run by it).")
@click.option("--allow-foreign-graph", is_flag=True, help="Run an ONNX graph linreg did not "
              "make (other operators, control flow). Only for files you trust.")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def predict_main(model: Path, input: str, output: str, input_format: str | None,
                 output_format: str | None, batch_rows: int, keep: tuple[str, ...],
                 pred_suffix: str | None, intervals: bool, contributions: bool,
                 on_unknown: str | None,
                 threads: int | None, engine: str, scheduler: str | None, workers: int | None,
                 master: str, allow_foreign_graph: bool, force: bool, quiet: bool) -> None:
    """Predict every row of INPUT (CSV, Parquet, NPY, JSON-lines; - for stdin) with MODEL
    (a model folder or a .onnx file). INPUT may be a folder or a glob of CSV, Parquet or
    JSON-lines parts: -o then names an output folder, with one output file per part."""
    from serve.batch.files import input_parts, predict_file, predict_folder
    from serve.core.tables import estimate_rows
    from serve.runtime.predictor import Predictor

    predictor = Predictor.load(model, threads=threads, allow_foreign_graph=allow_foreign_graph)
    keep_cols = [k.strip() for v in keep for k in v.split(",") if k.strip()]
    is_folder = is_many(input)
    if engine != "local" and not is_folder:
        raise click.UsageError(f"--engine {engine} runs a folder or glob of parts; INPUT is one "
                               "file (use --engine local)")
    if (scheduler is not None or workers is not None) and engine != "dask":
        raise click.UsageError("--scheduler and --workers are for --engine dask")
    if is_folder:
        if output == "-":
            raise click.UsageError("INPUT is a folder or glob: give -o an output folder (one "
                                   "output file per input part)")
        if input_format is not None:
            raise click.UsageError("--input-format is for one file; a folder's parts are read "
                                   "by their extensions")
        parts = input_parts(input)
        total = sum(estimate_rows(p) for p in parts)
        runner = None
        if engine == "dask":
            from serve.batch.engines import dask_engine

            runner = dask_engine(model, scheduler=scheduler, workers=workers,
                                 allow_foreign_graph=allow_foreign_graph)
        elif engine == "spark":
            from serve.batch.engines import spark_engine

            runner = spark_engine(model, master=master, allow_foreign_graph=allow_foreign_graph)
        with without_pandas() if runner is None else nullcontext(), \
                Progress(total or None, desc="predicting", unit="rows",
                         quiet=quiet or runner is not None) as bar:
            n = predict_folder(predictor, input, output, output_format=output_format,
                               batch_rows=batch_rows, keep=keep_cols, force=force,
                               pred_suffix=pred_suffix, intervals=intervals,
                               contributions=contributions, on_unknown=on_unknown,
                               progress=bar.to, engine=runner)
            bar.close(done=n)
        _warn_unpredictable(n)
        if not quiet:
            click.echo(f"Predicted {n:,} rows from {len(parts)} parts -> {output}/", err=True)
        return
    total = estimate_rows(Path(input)) if input != "-" and Path(input).is_file() else None
    with without_pandas(), Progress(total, desc="predicting", unit="rows", quiet=quiet) as bar:
        n = predict_file(predictor, input, output, input_format=input_format,
                         output_format=output_format, batch_rows=batch_rows, keep=keep_cols,
                         force=force, pred_suffix=pred_suffix, intervals=intervals,
                         contributions=contributions, on_unknown=on_unknown, progress=bar.to)
        bar.close(done=n)
    _warn_unpredictable(n)
    if not quiet and output != "-":
        click.echo(f"Predicted {n:,} rows -> {output}", err=True)


def _warn_unpredictable(count: Any) -> None:
    from serve.batch.files import unpredictable_message

    if message := unpredictable_message(count):
        click.echo(f"linreg-predict: warning: {message}", err=True)


@click.command("linreg-serve", cls=OneLineErrors, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="linreg")
@click.argument("path", metavar="PATH", type=click.Path(path_type=Path))
@click_options
def serve_main(path: Path, **options: Any) -> None:
    """Serve PATH over HTTP until SIGTERM or Ctrl-C: a model folder, a .onnx file, or a
    repository (a folder of model folders, optionally with version folders 1/, 2/, ... as
    Triton lays them out)."""
    import os
    import signal

    from serve.server.repository import Repository

    settings = ServerSettings(path=str(path), **options)
    try:
        import uvicorn

        from serve.server.app import create_app, log_to_stderr
        if settings.grpc_port is not None:
            import serve.server.grpc_service  # noqa: F401
    except ImportError as e:
        extra = "grpc" if "grpc" in str(e.name) or "proto" in str(e.name) else "http"
        raise click.ClickException(f"linreg-serve{' --grpc-port' if extra == 'grpc' else ''} "
                                   f"needs the {extra} extra: pip install "
                                   f"'linreg[{extra}]'") from None
    if settings.grpc_port is not None and settings.grpc_port == settings.port:
        raise click.BadParameter(f"{settings.grpc_port} is also --port; give gRPC its own port",
                                 param_hint="'--grpc-port'")
    # Fail here, clearly, not in a worker.
    repository = Repository.open(path, threads=settings.threads,
                                 allow_foreign_graph=settings.allow_foreign_graph,
                                 name=settings.name)
    for port in (settings.port, settings.grpc_port):
        if port is not None:
            _check_port(settings.host, port)
    os.environ.update(settings.to_env())  # for --workers' processes and the header bounds
    _announce(settings, repository)
    # uvicorn shuts down gracefully on SIGTERM/SIGINT (requests in flight finish, each within
    # --request-timeout), then re-raises the signal under the handlers it found: make those a
    # clean exit, status 0, that waits for no worker thread (a cancelled run may still be
    # unwinding inside onnxruntime).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: _exit_now(0))
    if settings.workers == 1:  # the models loaded above are the ones served
        log_to_stderr(settings.quiet)
        app: Any = create_app(repository, settings)
    else:  # each worker process loads its own
        app = "serve.server.app:app_from_env"
    uvicorn.run(app, factory=settings.workers > 1, host=settings.host, port=settings.port,
                workers=settings.workers, log_level="warning", access_log=settings.access_log,
                http="serve.server.http_limits:BoundedHttpToolsProtocol",
                timeout_graceful_shutdown=max(1, int(settings.request_timeout) + 1),
                server_header=False)
    _exit_now(0)


def _announce(settings: ServerSettings, repository: Any) -> None:
    """Warnings (a public address, models that did not load), then the start line."""
    host, port, grpc_port = settings.host, settings.port, settings.grpc_port
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"linreg-serve: warning: listening on {host}, reachable from other machines",
                   err=True)
    for entry in repository.index():
        if entry["state"] != "READY":
            version = f" version {entry['version']}" if "version" in entry else ""
            click.echo(f"linreg-serve: warning: model {entry['name']}{version} is unavailable: "
                       f"{entry.get('reason')}", err=True)
    if settings.quiet:
        return
    ready = repository.ready()
    if repository.kind != "repository" and ready:
        p = ready[0].predictor
        what = (f"{ready[0].name!r} ({p.n_features} features -> {p.n_targets} target(s))"
                if len(repository.versions(ready[0].name)) == 1 else
                f"{ready[0].name!r} (versions {', '.join(repository.versions(ready[0].name))})")
    else:
        what = (f"{len(ready)} model(s) from {settings.path}"
                + (f" ({', '.join(v.name for v in ready)})" if ready else ""))
    grpc_text = f", gRPC on {host}:{grpc_port}" if grpc_port is not None else ""
    click.echo(f"linreg-serve: serving {what} on http://{host}:{port}{grpc_text} "
               f"(OpenAPI at /docs, metrics at /metrics)", err=True)


def _check_port(host: str, port: int) -> None:
    """Say "port in use" in one line, before uvicorn or gRPC would."""
    import socket

    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as e:
        raise click.ClickException(f"cannot listen on {host}:{port}: {e.strerror}") from None


def _exit_now(code: int) -> None:
    """Flush and leave at once, without joining worker threads."""
    import os

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
