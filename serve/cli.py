"""Console scripts of the runtime: ``linreg-predict`` and ``linreg-serve``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from serve._cli import CONTEXT, FiniteFloat, OneLineErrors
from serve.formats import INPUT_FORMATS, MAX_THREADS, OUTPUT_FORMATS
from serve.progress import Progress
from serve.version import __version__


@click.command("linreg-predict", cls=OneLineErrors, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="linreg")
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("input", type=str)
@click.option("-o", "--output", default="-", show_default=True,
              help="Output file (.csv, .parquet, .npy, .jsonl) or - for stdout.")
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
@click.option("--threads", type=click.IntRange(0, MAX_THREADS), default=None,
              help="onnxruntime threads (0: one per core). Default: picked per batch size.")
@click.option("--allow-foreign-graph", is_flag=True, help="Run an ONNX graph linreg did not "
              "make (other operators, control flow). Only for files you trust.")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def predict_main(model: Path, input: str, output: str, input_format: str | None,
                 output_format: str | None, batch_rows: int, keep: tuple[str, ...],
                 pred_suffix: str | None, intervals: bool,
                 threads: int | None, allow_foreign_graph: bool, force: bool,
                 quiet: bool) -> None:
    """Predict every row of INPUT (CSV, Parquet, NPY, JSON-lines; - for stdin) with MODEL
    (a model folder or a .onnx file)."""
    from serve.batch import predict_file
    from serve.predictor import Predictor
    from serve.tables import estimate_rows

    predictor = Predictor.load(model, threads=threads, allow_foreign_graph=allow_foreign_graph)
    keep_cols = [k.strip() for v in keep for k in v.split(",") if k.strip()]
    total = estimate_rows(Path(input)) if input != "-" and Path(input).is_file() else None
    with Progress(total, desc="predicting", unit="rows", quiet=quiet) as bar:
        n = predict_file(predictor, input, output, input_format=input_format,
                         output_format=output_format, batch_rows=batch_rows, keep=keep_cols,
                         force=force, pred_suffix=pred_suffix, intervals=intervals,
                         progress=bar.to)
        bar.close(done=n)
    if not quiet and output != "-":
        click.echo(f"Predicted {n:,} rows -> {output}", err=True)


@click.command("linreg-serve", cls=OneLineErrors, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="linreg")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. The default is loopback only.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes.")
@click.option("--name", default=None, help="Model name in URLs. Default: the folder's name.")
@click.option("--max-body-bytes", type=click.IntRange(min=1), default=32 << 20,
              show_default=True, help="Largest request body accepted (413 above).")
@click.option("--max-rows", type=click.IntRange(min=1), default=100_000, show_default=True,
              help="Most rows per request (413 above).")
@click.option("--max-header-bytes", type=click.IntRange(1024, 1 << 20), default=64 << 10,
              show_default=True, help="Largest request line + headers accepted (431 above).")
@click.option("--request-timeout", type=FiniteFloat(0, 3600, min_open=True), default=30.0,
              show_default=True, help="Seconds a client has to send its headers, and a request "
              "to be read and predicted (408/503 after).")
@click.option("--threads", type=click.IntRange(0, MAX_THREADS), default=None,
              help="onnxruntime threads per worker. Default: picked per batch size.")
@click.option("--allow-foreign-graph", is_flag=True, help="Serve an ONNX graph linreg did not "
              "make (other operators, control flow). Only for files you trust.")
@click.option("--access-log", is_flag=True, help="Log every request.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors (no start line, no "
              "log line per bad request).")
def serve_main(model: Path, host: str, port: int, workers: int, name: str | None,
               max_body_bytes: int, max_rows: int, max_header_bytes: int,
               request_timeout: float, threads: int | None, allow_foreign_graph: bool,
               access_log: bool, quiet: bool) -> None:
    """Serve MODEL (a model folder or a .onnx file) over HTTP until SIGTERM or Ctrl-C."""
    import os
    import signal
    import socket

    from serve.predictor import Predictor

    try:
        import uvicorn

        from serve.server import model_name
    except ImportError:
        raise click.ClickException("linreg-serve needs the http extra: pip install "
                                   "'linreg[http]'") from None
    # Fail here, clearly, not in a worker.
    predictor = Predictor.load(model, threads=threads, allow_foreign_graph=allow_foreign_graph)
    name = name or model_name(model)
    try:  # say "port in use" in one line, before uvicorn would
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as e:
        raise click.ClickException(f"cannot listen on {host}:{port}: {e.strerror}") from None
    os.environ.update({"LINREG_SERVE_MODEL": str(model), "LINREG_SERVE_NAME": name,
                       "LINREG_SERVE_MAX_BODY": str(max_body_bytes),
                       "LINREG_SERVE_MAX_ROWS": str(max_rows),
                       "LINREG_SERVE_MAX_HEADER": str(max_header_bytes),
                       "LINREG_SERVE_TIMEOUT": str(request_timeout),
                       "LINREG_SERVE_FOREIGN": "1" if allow_foreign_graph else "0",
                       "LINREG_SERVE_QUIET": "1" if quiet else "0"})
    if threads is not None:
        os.environ["LINREG_SERVE_THREADS"] = str(threads)
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"linreg-serve: warning: listening on {host}, reachable from other machines",
                   err=True)
    if not quiet:
        click.echo(f"linreg-serve: serving {name!r} ({predictor.n_features} features -> "
                   f"{predictor.n_targets} target(s)) on http://{host}:{port} "
                   f"(OpenAPI at /docs, metrics at /metrics)", err=True)
    # uvicorn shuts down gracefully on SIGTERM/SIGINT (requests in flight finish, each within
    # --request-timeout), then re-raises the signal under the handlers it found: make those a
    # clean exit, status 0, that waits for no worker thread (a cancelled run may still be
    # unwinding inside onnxruntime).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: _exit_now(0))
    uvicorn.run("serve.server:app_from_env", factory=True, host=host, port=port,
                workers=workers, log_level="warning", access_log=access_log,
                http="serve.http_limits:BoundedHttpToolsProtocol",
                timeout_graceful_shutdown=max(1, int(request_timeout) + 1), server_header=False)
    _exit_now(0)


def _exit_now(code: int) -> None:
    """Flush and leave at once, without joining worker threads."""
    import os

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
