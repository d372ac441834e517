"""Console scripts of the runtime: ``linreg-predict`` and ``linreg-serve``."""

from __future__ import annotations

import click

from serve._cli import CONTEXT, OneLineErrors


@click.command("linreg-predict", cls=OneLineErrors, context_settings=CONTEXT)
@click.argument("args", nargs=-1)
def predict_main(args) -> None:
    """Batch prediction from files (not built yet)."""
    raise click.ClickException("linreg-predict is not built yet (issue #3)")


@click.command("linreg-serve", cls=OneLineErrors, context_settings=CONTEXT)
@click.argument("args", nargs=-1)
def serve_main(args) -> None:
    """HTTP serving (not built yet)."""
    raise click.ClickException("linreg-serve is not built yet (issue #4)")
