"""What ``linreg-train`` prints when a fit is done: the run in one line, the columns, each
target's equation, the fit's figures, the artifacts, and the warnings."""

from __future__ import annotations

from pathlib import Path

import click

STOPPED = {"epochs": "{n} epochs", "tol": "{n} epochs (stopped by --tol)",
           "early": "{n} epochs (early stopping: kept the best validation epoch)",
           "exact": "exact least squares"}


def print_summary(folder: Path, manifest: dict, *, default_target: bool = False) -> None:
    """``default_target``: the target was not named (--target), so the summary names it."""
    t = manifest["training"]
    m = manifest["metrics"]
    click.echo(f"Trained {manifest['model']['n_features']} feature(s) -> "
               f"{manifest['model']['n_targets']} target(s) on {t['device']}: "
               f"{STOPPED[t['stopped']].format(n=t['epochs_run'])}, {t['seconds']:.2f}s")
    if default_target:
        click.echo(f"  target {manifest['targets'][0]!r} (the last column; choose with "
                   "--target)")
    if manifest.get("columns"):
        click.echo("  columns: " + ", ".join(_column_text(c) for c in manifest["columns"]))
    if t.get("huber_scale"):
        click.echo("  Huber scale σ (estimated with the coefficients): "
                   + ", ".join(f"{v:.6g}" for v in t["huber_scale"]))
    if t.get("cv"):
        from trainer.cv import cv_message

        click.echo(f"  {cv_message(t['cv'])}")
    for i, target in enumerate(manifest["targets"]):
        terms = [(w, f"·{f}") for f, w in zip(manifest["features"], manifest["model"]["coef_"][i])]
        if manifest["model"]["bias"]:
            terms.append((manifest["model"]["intercept_"][i], ""))
        text = " ".join(f"{'-' if w < 0 else '+'} {abs(w):.6g}{name}" for w, name in terms)
        click.echo(f"  {target} = {text.removeprefix('+ ')}")
    for split in ("train", "validation"):
        if split in m:
            click.echo(f"  {split:<10} {_fit_figures(m[split], manifest['targets'])}")
    click.echo(f"Artifacts: {folder}/ ({', '.join(manifest['artifacts'])}, model.json)")
    for warning in manifest.get("warnings") or []:
        click.echo(f"linreg-train: warning: {warning}", err=True)
    opt = m.get("exact_least_squares")
    if opt and opt["sgd_short_of_it"]:
        click.echo(f"linreg-train: warning: SGD stopped short of the best fit: train "
                   f"{_fit_figures(m['train'], manifest['targets'])}, where exact least squares "
                   f"gets {_fit_figures(opt, manifest['targets'])}; try --standardize with a "
                   "larger --lr (e.g. 0.1), more --epochs, or --solver lstsq", err=True)


def _column_text(c: dict) -> str:
    """``city (categorical, 3 levels, reference 'Lyon')``, ``x1 (12 blanks -> 10.2)``."""
    if c["kind"] == "categorical":
        ref = f", reference {c['reference']!r}" if c.get("reference") is not None else ""
        return f"{c['name']} (categorical, {len(c['levels'])} levels{ref})"
    if c.get("fill") is None:
        return c["name"]
    blanks = f"{c.get('blanks', 0):,} blank(s)" + (" + indicator" if c.get("indicator") else "")
    return f"{c['name']} ({blanks}; a blank is {c['fill']:.6g})"


def _fit_figures(metrics: dict, targets: list[str]) -> str:
    """``MSE 2.86e+03, R² 0.518`` (per target, named, when there are several)."""
    def one(mse: float, r2: float | None) -> str:
        return f"MSE {mse:.4g}, R² " + ("n/a" if r2 is None else f"{r2:.3f}")
    if len(targets) == 1:
        return one(metrics["mse"][0], metrics["r2"][0])
    return "; ".join(f"{t}: {one(mse, r2)}" for t, mse, r2 in zip(targets, metrics["mse"],
                                                                 metrics["r2"]))
