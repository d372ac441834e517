"""Console scripts of the runtime: ``linreg-predict`` and ``linreg-serve``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from serve._cli import CONTEXT, OneLineErrors
from serve.batch import INPUT_FORMATS, OUTPUT_FORMATS


@click.command("linreg-predict", cls=OneLineErrors, context_settings=CONTEXT)
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
@click.option("--keep", multiple=True, help="Pass this input column through (repeatable), "
              "e.g. an id.")
@click.option("--threads", type=click.IntRange(min=0), default=None,
              help="onnxruntime threads (0: one per core). Default: picked per batch size.")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def predict_main(model: Path, input: str, output: str, input_format: str | None,
                 output_format: str | None, batch_rows: int, keep: tuple[str, ...],
                 threads: int | None, force: bool, quiet: bool) -> None:
    """Predict every row of INPUT (CSV, Parquet, NPY, JSON-lines; - for stdin) with MODEL
    (a model folder or a .onnx file)."""
    from serve.batch import predict_file
    from serve.predictor import Predictor

    predictor = Predictor.load(model, threads=threads)
    keep_cols = [k.strip() for v in keep for k in v.split(",") if k.strip()]
    bar = None
    if not quiet and sys.stderr.isatty() and input != "-" and Path(input).is_file() \
            and Path(input).stat().st_size > 50_000_000:
        bar = click.progressbar(length=_estimate_rows(Path(input)), label="predicting",
                                file=sys.stderr)
    try:
        progress = None if bar is None else (lambda done: bar.update(done - bar.pos))
        n = predict_file(predictor, input, output, input_format=input_format,
                         output_format=output_format, batch_rows=batch_rows, keep=keep_cols,
                         force=force, progress=progress)
    finally:
        if bar is not None:
            bar.render_finish()
    if not quiet and output != "-":
        click.echo(f"Predicted {n:,} rows -> {output}", err=True)


def _estimate_rows(path: Path) -> int:
    with open(path, "rb") as f:
        sample = f.read(1 << 16)
    return max(1, path.stat().st_size * max(1, sample.count(b"\n")) // max(1, len(sample)))


@click.command("linreg-serve", cls=OneLineErrors, context_settings=CONTEXT)
@click.argument("args", nargs=-1)
def serve_main(args) -> None:
    """HTTP serving (not built yet)."""
    raise click.ClickException("linreg-serve is not built yet (issue #4)")
