"""linreg-train and linreg-export run in-process (click's CliRunner), asserting the exit code:
the one way the training tests drive the commands."""

from __future__ import annotations

from click.testing import CliRunner, Result

from trainer.cli import export_main, train_main


def train(*args, code: int = 0) -> Result:
    res = CliRunner().invoke(train_main, [*map(str, args)])
    assert res.exit_code == code, res.output + res.stderr
    return res


def export(folder, *args, code: int = 0) -> Result:
    res = CliRunner().invoke(export_main, [str(folder), *map(str, args)])
    assert res.exit_code == code, res.output + res.stderr
    return res
