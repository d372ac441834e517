"""Training from a stream of chunks, end to end: a folder or glob of files, a file past
``--max-memory``, ``--batch-rows``, ``--nproc`` or torchrun. The steps, each a function: check
the settings, open this rank's share, encode and scan (:mod:`trainer.stream`), fit (exactly
from R, or SGD through :mod:`trainer.streamed_sgd`), metrics and statistics from R, plots from
a sample, and the same artifact folder as in memory (:mod:`trainer.train`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from serve.core.errors import DataError
from serve.core.manifest import (
    sha256_file,
)
from trainer.checkpoint import Checkpoint
from trainer.config import TrainConfig, TrainingError
from trainer.data import dropped_message, pick_columns
from trainer.encode import EncodeConfig, id_like
from trainer.fit import FitResult, resolve_device, saved_values, state_dict_of
from trainer.runs import check_run, checkpoint_scope, open_checkpoint, run_record, warm_start
from trainer.stats import sgd_distance
from trainer.train import check_out, not_least_squares, underfit, write_folder

MEMORY_OVERHEAD = 3  # a chunk in memory: float64 values, their X/Y split, the torch copy


class _Background:
    """``fn(*args)`` run in a daemon thread from now on (hashing releases the GIL, so it
    overlaps the fit); :meth:`result` waits for it."""

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        import threading

        self._value: Any = None
        self._error: BaseException | None = None

        def run() -> None:
            try:
                self._value = fn(*args)
            except BaseException as e:  # raised to the caller of result()
                self._error = e
        self._thread = threading.Thread(target=run, daemon=True, name="linreg-background")
        self._thread.start()

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


def dataset_sha256(files: Sequence[Path]) -> str:
    """One file's sha256; for several, the sha256 of their names and sha256s, in order."""
    if len(files) == 1:
        return sha256_file(files[0])
    import hashlib

    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.name}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def train_streamed(data_path: str | Path, *, out: str | Path | None = None,
                   config: TrainConfig, targets: Sequence[str] = (),
                   features: Sequence[str] = (), exclude: Sequence[str] = (),
                   val_fraction: float | None = None, val_data: str | Path | None = None,
                   batch_rows: int = 65536, max_memory: int = 4 << 30, force: bool = False,
                   cov: str = "nonrobust", confidence: float = 0.95,
                   sample_weight: str | None = None, encoding: EncodeConfig | None = None,
                   init_from: str | Path | None = None, plot: bool = False,
                   checkpoint_every: int | None = None, resume: str | Path | None = None,
                   log: Callable[[str], None] | None = None,
                   progress: Callable[[float], None] | None = None,
                   group: Any = None) -> tuple[Path, dict[str, Any] | None]:
    """Train from ``data_path`` (a file, folder or glob; :mod:`trainer.dataset`) in chunks of
    ``batch_rows`` rows (:mod:`trainer.stream`), on this rank's share of a distributed run
    (``group``, :func:`trainer.distributed.join`). Only rank 0 writes the artifact folder, when
    every rank is done; other ranks return ``(out, None)``. ``checkpoint_every`` and ``resume``
    are as :func:`train`'s (rank 0 writes the checkpoint; every rank resumes from it)."""
    from serve.core.columns import is_plain
    from trainer.dataset import Dataset
    from trainer.distributed import Group
    group = group or Group(device=resolve_device(config.device))
    out = Path(out) if out is not None else Path("models") / Path(str(data_path).rstrip("/*")
                                                                  ).stem
    encoding = encoding or EncodeConfig()
    _check_streamed(config, encoding, val_fraction=val_fraction, val_data=val_data, cov=cov,
                    confidence=confidence)
    if group.rank == 0:
        check_out(out, Path(data_path) if Path(data_path).exists() else Path.cwd() / "_", force)
    checkpoint = open_checkpoint(out, resume=resume, every=checkpoint_every, force=force,
                                 rank=group.rank, record=lambda: run_record(
        data_path, out=out, config=config, encoding=encoding, targets=targets,
        features=features, exclude=exclude, sample_weight=sample_weight, init_from=init_from,
        val_fraction=val_fraction, cov=cov, confidence=confidence, plot=plot,
        checkpoint_every=checkpoint_every, val_data=val_data, batch_rows=batch_rows,
        max_memory=max_memory, nproc=group.world))
    with checkpoint_scope(checkpoint if group.rank == 0 else None, resumed=resume is not None):
        # 1. The dataset, its columns, this rank's share (rank 0 hashes the files meanwhile).
        ds = Dataset.open(data_path, na=encoding.na_values)
        digest = _Background(dataset_sha256, ds.files) if group.rank == 0 else None
        if encoding.formula is not None:  # the response's columns and the terms' columns
            targets, raw_features = _formula_columns(ds, encoding.formula, targets=targets,
                                                     features=features, exclude=exclude,
                                                     weight=sample_weight)
        else:
            targets, raw_features = pick_columns(ds.shown, ds.columns, targets=targets,
                                                 features=features, exclude=exclude,
                                                 weight=sample_weight)
        _check_categorical(ds.shown, encoding, raw_features)
        share = _Share(ds, raw_features, targets, group, val_data=val_data,
                       val_fraction=val_fraction, weight=sample_weight, batch_rows=batch_rows,
                       max_memory=max_memory, seed=config.seed,
                       missing_target=encoding.missing_target, na=encoding.na_values)
        # 2. The encoding (--formula: its design, learned on the training rows), and the scan
        # (the R factors, counts, means, spreads).
        formula = share.learn_formula(encoding) if encoding.formula is not None else None
        if formula is not None:
            config = replace(config, bias=formula.intercept)
            targets = [formula.response]
        specs, rows, summary = share.scan(encoding, bias=config.bias, formula=formula)
        _check_scan(summary, len(rows.features) + int(config.bias), val_fraction=val_fraction,
                    weighted=sample_weight is not None)
        features = rows.features
        cv = None
        if config.cv:  # --cv K: α from the grid, by the folds of the training rows (a pass)
            from trainer.cv import choose_alpha

            config, cv = choose_alpha(rows.located_train(), config, len(features), group)
        # 3. The fit: exact from R, or SGD through the one loop.
        exact = _exact_from_r(summary, config, len(features), weighted=sample_weight is not None)
        result, sse = _fit(rows, summary, exact, config, group, init_from=init_from, log=log,
                           progress=progress, checkpoint=checkpoint)
        # 4. Metrics and statistics at the saved parameters, from R (HC0-HC3: one more pass).
        metrics = _metrics_from_r(summary, result, sse, exact, config)
        stats = _streamed_statistics(rows, summary, result, sse, config, group, cov=cov,
                                     confidence=confidence)
        # (sgd_distance also records SGD's distance from the optimum in ``metrics``)
        warnings = ([dropped_message(summary.dropped, targets)] if summary.dropped else []) \
            + id_like(specs, int(summary.x.n)) + stats.warnings \
            + sgd_distance(metrics, stats, result.coef_, result.intercept_, bias=config.bias)
        passes = ds.reads  # over this rank's share of the files (the encoding's, the scan, ...)
        if group.rank != 0:
            return out, None
        # 5. Rank 0 writes the artifact folder, atomically (--plot: the history, and the data
        # plots drawn from a sample of rank 0's first rows).
        pictures = _streamed_plots(rows, result, config, cv) if plot else None
        columns = specs if specs is not None and not is_plain(specs) else None
        manifest = write_folder(
            out, force=force, result=result, config=config, features=features, targets=targets,
            columns=columns, encoding=encoding, metrics=metrics, stats=stats, warnings=warnings,
            data=_data_record(ds, summary, digest.result(), val_data=val_data,
                              sample_weight=sample_weight),
            training={"streamed": {"batch_rows": batch_rows, "kept_in_memory": rows.cache,
                                   "passes": passes, "world_size": group.world,
                                   "backend": group.backend,
                                   "rows_per_rank": summary.train_rows},
                      **({"cv": cv} if cv else {})}, plots=pictures, means=summary.x.mean,
            formula=formula)
        return out, manifest


def _data_record(ds: Any, summary: Any, sha256: str, *, val_data: str | Path | None,
                 sample_weight: str | None) -> dict[str, Any]:
    """The manifest's ``data``: the files, their digest, and how the rows were used."""
    return {"path": str(Path(ds.shown).resolve()) if Path(ds.shown).exists() else ds.shown,
            "files": [str(f.resolve()) for f in ds.files], "sha256": sha256,
            "rows": int(summary.x.n) + (0 if val_data else summary.val_rows),
            "dropped_rows": summary.dropped,
            "train_rows": int(summary.x.n), "validation_rows": summary.val_rows,
            "validation": (f"--val-data {val_data}" if val_data else
                           "a seeded hash of (file, row)" if summary.val_rows else None),
            "validation_indices": None, "sample_weight": sample_weight}


def _check_categorical(shown: str, encoding: EncodeConfig, features: list[str]) -> None:
    if unknown := sorted(set(encoding.categorical) - set(features)):
        raise DataError(f"{shown}: unknown categorical column {unknown[0]!r}; the features are "
                        f"{', '.join(features)}")


def _fit(rows: Any, summary: Any, exact: tuple[np.ndarray, np.ndarray] | None,
         config: TrainConfig, group: Any, *, init_from: str | Path | None,
         log: Callable[[str], None] | None, progress: Callable[[float], None] | None,
         checkpoint: Checkpoint | None) -> tuple[FitResult, np.ndarray]:
    """The fit and the residual sums of squares at it: exact from R (``exact``), or SGD."""
    from trainer.streamed_sgd import sgd

    start = time.perf_counter()
    if config.huber_epsilon is not None:  # HuberRegressor: L-BFGS-B, a pass an evaluation
        from trainer.solvers import huber

        coef, intercept, scale = huber(
            rows.weighted_train, n_features=len(rows.features), n_targets=len(rows.targets),
            bias=config.bias, epsilon=config.huber_epsilon,
            alpha=config.alpha if config.penalty == "l2" else 0.0, total=group.sum)
        result, sse = _exact_result((coef, intercept), summary, config, len(rows.targets),
                                    str(group.device))
        result.huber_scale = scale
    elif config.solver == "lstsq":
        result, sse = _exact_result(exact, summary, config, len(rows.targets), str(group.device))
    else:
        start_at = warm_start(init_from, rows.features, rows.targets, config) \
            if init_from is not None else None
        result, sse = sgd(rows, summary, config, group, log=log, progress=progress,
                          start=start_at, checkpoint=checkpoint)
    result.seconds = time.perf_counter() - start
    return result, sse


def _check_streamed(config: TrainConfig, encoding: EncodeConfig, *, val_fraction: float | None,
                    val_data: str | Path | None, cov: str, confidence: float) -> None:
    """The settings of a streamed fit, checked before anything is read."""
    check_run(config, encoding, val_fraction=val_fraction, cov=cov, confidence=confidence,
              val_data=val_data)
    if config.early_stopping and not val_fraction and val_data is None:
        raise TrainingError("--early-stopping watches the validation cost: add --val-fraction "
                            "(e.g. 0.2) or --val-data")


class _Share:
    """This rank's share of a dataset (and of ``--val-data``'s), read as numbers or encoded."""

    def __init__(self, ds: Any, features: list[str], targets: list[str], group: Any, *,
                 val_data: str | Path | None, val_fraction: float | None, weight: str | None,
                 batch_rows: int, max_memory: int, seed: int, missing_target: str,
                 na: tuple[str, ...]) -> None:
        from trainer.dataset import Dataset

        self.ds, self.features, self.targets, self.group = ds, features, targets, group
        self.val_fraction, self.weight, self.seed = val_fraction, weight, seed
        self.batch_rows, self.max_memory = batch_rows, max_memory
        self.missing_target = missing_target
        self.parts = ds.shard(group.rank, group.world)
        self.share_rows = sum(p.rows or 0 for p in self.parts) if ds.format == "parquet" else \
            ds.estimated_rows() // group.world
        self.vds = None
        if val_data is not None:
            self.vds = Dataset.open(val_data, na=na)
            pick_columns(self.vds.shown, self.vds.columns, targets=targets, features=features)

    def rows(self, specs: list | None, formula: Any = None) -> Any:
        """This rank's rows: numbers as they are, raw columns encoded by ``specs``, or raw
        columns through ``formula`` (its design, its response)."""
        from trainer.encode import encoded_names
        from trainer.stream import Rows

        names = self.features if specs is None else encoded_names(specs) if formula is None \
            else formula.names
        cache = self.share_rows * (len(names) + len(self.targets)) * 8 * MEMORY_OVERHEAD \
            <= self.max_memory
        kw = dict(batch_rows=self.batch_rows, cache=cache, seed=self.seed, specs=specs,
                  missing_target=self.missing_target, formula=formula)
        targets = self.targets if formula is None else [formula.response]
        if formula is not None:
            kw["reads"] = self.targets  # the response's columns
        group = self.group
        val = None if self.vds is None else Rows(
            self.vds, self.vds.shard(group.rank, group.world), names, targets,
            val_fraction=None, **kw)
        return Rows(self.ds, self.parts, names, targets, val_fraction=self.val_fraction,
                    val=val, weight=self.weight, **kw)

    def learn_formula(self, encoding: EncodeConfig) -> Any:
        """--formula's design on the training rows: a pass learns the terms' columns as plain
        columns are learned (numbers or text, --impute's fills; every rank its share), then
        rank 0 gives patsy every training row, chunk by chunk (patsy's passes: the levels, the
        stateful transforms), and every rank takes its spec."""
        from trainer.formula import FormulaSpec
        from trainer.stream import learn_encoding

        kinds = learn_encoding(self.rows(None), self.features, encoding, self.group, bias=True)
        outcome: Any = None
        if self.group.rank == 0:  # its spec, or its one-line error (every rank raises it)
            try:
                outcome = _learned_formula(self, encoding, kinds).to_json()
            except DataError as e:
                outcome = ("data", str(e))
            except TrainingError as e:
                outcome = ("training", str(e))
        outcome = self.group.gather_object(outcome)[0]
        if isinstance(outcome, tuple):
            raise (DataError if outcome[0] == "data" else TrainingError)(outcome[1])
        return FormulaSpec.from_json(outcome)

    def scan(self, encoding: EncodeConfig, *, bias: bool, formula: Any = None
             ) -> tuple[list | None, Any, Any]:
        """The specs (None: numbers as they are), the rows and their scan: the encoding is
        learned in one pass first when a flag asks for it or a feature cell turns out not to be
        a number (categorical columns, blanks; as in memory); with ``formula``, its design."""
        from trainer.stream import NeedsEncoding, learn_encoding, scan

        if formula is not None:
            specs = formula.column_specs()
            rows = self.rows(specs, formula)
            return specs, rows, scan(rows, self.group, bias=bias)
        specs = None
        if not encoding.plain or self.ds.has_text(self.features):
            specs = learn_encoding(self.rows(None), self.features, encoding, self.group,
                                   bias=bias)
        rows = self.rows(specs)
        try:
            return specs, rows, scan(rows, self.group, bias=bias)
        except NeedsEncoding:
            specs = learn_encoding(rows, self.features, encoding, self.group, bias=bias)
            rows = self.rows(specs)
            return specs, rows, scan(rows, self.group, bias=bias)


def _formula_columns(ds: Any, formula: str, *, targets: Sequence[str],
                     features: Sequence[str], exclude: Sequence[str],
                     weight: str | None) -> tuple[list[str], list[str]]:
    """The response's raw columns and the terms' raw columns of ``formula`` in ``ds``."""
    from trainer.formula import needed_columns

    if targets or features or exclude or weight:
        raise TrainingError("--formula names the response and the terms: drop --target, "
                            "--features, --exclude and --sample-weight")
    wanted = needed_columns(formula)
    for name in wanted:
        if name not in ds.columns:
            raise DataError(f"{ds.shown}: --formula reads column {name!r}, which is not in the "
                            f"data; the columns are {', '.join(ds.columns)}")
    response = needed_columns(formula, response_only=True)
    return response, [n for n in wanted if n not in response]


def _learned_formula(share: _Share, encoding: EncodeConfig, kinds: list) -> Any:
    """patsy's design of ``formula`` over every training row of the dataset (rank 0), the terms'
    columns read as ``kinds`` says (numbers filled by --impute, or level texts); checked
    against patsy's own matrix on the first chunk."""
    import contextlib

    import patsy
    import pyarrow as pa

    from trainer.dataset import validation_mask
    from trainer.formula import learn_streamed, raw_of

    ds, response, formula = share.ds, share.targets, encoding.formula
    parts = ds.shard(0, 1)
    fills = {s.name: s.fill for s in kinds if s.kind == "numeric" and s.fill is not None}
    ranges: dict[str, list[float]] = {}

    def chunks():
        for chunk in ds.raw_chunks(parts, share.features, response,
                                   batch_rows=share.batch_rows, blanks=response):
            keep = ~np.isnan(chunk.values).any(axis=1)
            if share.val_fraction:
                keep &= ~validation_mask(share.seed, share.val_fraction, chunk.file,
                                         chunk.first_row, len(chunk))
            if share.missing_target == "error" and np.isnan(chunk.values).any():
                r = int(np.flatnonzero(np.isnan(chunk.values).any(axis=1))[0])
                raise DataError(f"{ds.files[chunk.file]}: row {chunk.first_row + r + 1}: the "
                                "response is blank; drop the row (or use --missing-target drop)")
            if not keep.any():
                continue
            raw = raw_of(chunk.table.filter(pa.array(keep)), kinds,
                         source=str(ds.files[chunk.file]))
            for name, value in fills.items():
                raw[name] = np.where(np.isnan(raw[name]), value, raw[name])
            for name, values in raw.items():
                if values.dtype != object and len(values):
                    lo, hi = ranges.get(name, [np.inf, -np.inf])
                    ranges[name] = [min(lo, float(values.min())), max(hi, float(values.max()))]
            raw.update({n: chunk.values[keep, k] for k, n in enumerate(response)})
            yield raw

    spec, info = learn_streamed(formula, chunks, [*share.features, *response])
    spec.fills, spec.ranges, spec.unknown = fills or None, ranges, encoding.unknown
    spec.check_unknown()
    with contextlib.closing(chunks()) as again:  # (closed: its reader ends now)
        first = next(again, None)
    if first is not None:  # the compiled design against patsy's own, on a chunk
        want = np.asarray(patsy.build_design_matrices([info], first)[0], dtype=np.float64)
        want = want[:, 1:] if spec.intercept else want
        if not np.allclose(spec.design(first), want, rtol=1e-9, atol=1e-12):
            raise DataError(f"--formula {formula!r}: the compiled design differs from patsy's "
                            "on the training rows; please report this formula")
    return spec


def _check_scan(summary: Any, n_params: int, *, val_fraction: float | None,
                weighted: bool) -> None:
    """What the scan found that makes a fit impossible: too few rows, no validation row, no
    weight."""
    if summary.x.n < n_params:
        raise TrainingError(f"{int(summary.x.n)} training rows but the model has {n_params} "
                            f"parameters per target; need at least {n_params} rows (or fewer "
                            "features)")
    if val_fraction and summary.val_rows == 0:
        raise DataError(f"--val-fraction {val_fraction} picks no validation row among "
                        f"{int(summary.x.n):,}; use a larger fraction")
    if weighted and not summary.weight > 0:
        raise TrainingError("every training row has sample weight 0")


def _exact_from_r(summary: Any, config: TrainConfig, n_features: int, *,
                  weighted: bool) -> tuple[np.ndarray, np.ndarray]:
    """The exact optimum of ``config``'s objective from the scan's R: least squares, or the
    penalised objective (weights scaled to sum to n, as scikit-learn: R of √(w·n/Σw)·[X, 1|Y])."""
    from trainer.stream import standardization
    from trainer.tsqr import least_squares_from_r, penalized_from_r

    if config.penalty == "none":
        return least_squares_from_r(summary.R, n_features, bias=config.bias)
    Rn = summary.R * np.sqrt(summary.x.n / summary.weight) if weighted else summary.R
    mean, scale = standardization(summary, replace(config, solver="lstsq"))
    return penalized_from_r(Rn, summary.x.n, n_features, bias=config.bias,
                            penalty=config.penalty, alpha=config.alpha,
                            l1_ratio=config.l1_ratio, mean=mean, scale=scale)


def _exact_result(exact: tuple[np.ndarray, np.ndarray], summary: Any, config: TrainConfig,
                  n_targets: int, device: str) -> tuple[FitResult, np.ndarray]:
    """An exact fit's result at its saved (dtype-rounded) values, its one-row history the
    (weighted) cost, and its train sums of squared errors per target."""
    from trainer.tsqr import sse_from_r

    state = state_dict_of(exact[0], exact[1] if config.bias else None, getattr(torch, config.dtype))
    coef, intercept = saved_values(state, n_targets)
    result = FitResult(coef, intercept, state, np.zeros((1, 1)), ["cost"], 0, "exact", device,
                       config=asdict(config))
    result.history[0, 0] = float(sse_from_r(summary.R, coef, intercept, bias=config.bias).sum()
                                 / (summary.weight * n_targets))
    return result, sse_from_r(summary.unweighted_r, coef, intercept, bias=config.bias)


def _metrics_from_r(summary: Any, result: FitResult, sse: np.ndarray,
                    exact: tuple[np.ndarray, np.ndarray], config: TrainConfig) -> dict:
    """Train and validation MSE and R² at the saved parameters (and, for SGD, the exact
    optimum's), from the R factors: no pass over the rows."""
    from trainer.stream import regression_metrics
    from trainer.tsqr import sse_from_r

    metrics = {"train": regression_metrics(sse, summary.y)}
    if summary.val_rows:
        val_sse = sse_from_r(summary.R_val, result.coef_, result.intercept_, bias=config.bias)
        metrics["validation"] = regression_metrics(val_sse, summary.y_val)
    if config.solver == "sgd" and config.loss == "mse":  # (Huber has no closed form)
        optimum = regression_metrics(sse_from_r(summary.unweighted_r, *exact, bias=config.bias),
                                     summary.y)
        optimum["sgd_short_of_it"] = underfit(metrics["train"], optimum)
        optimum["coef_"] = np.asarray(exact[0]).tolist()
        optimum["intercept_"] = np.asarray(exact[1]).tolist()
        metrics["exact_least_squares"] = optimum
    return metrics


def _streamed_statistics(rows: Any, summary: Any, result: FitResult, sse: np.ndarray,
                         config: TrainConfig, group: Any, *, cov: str, confidence: float) -> Any:
    """The statistics at the saved parameters: the design's R and the residual sums from the
    scan, and one more pass for the residual diagnostics (and a robust covariance's meat)."""
    from trainer.stats import Sufficient, statistics
    from trainer.stream import residual_pass
    from trainer.tsqr import design_r, sse_from_r

    p, bias = len(rows.features), config.bias

    def gather() -> Sufficient:
        suff = Sufficient(n=int(summary.x.n), R=design_r(summary.R, p, bias=bias), ssr=sse,
                          tss=summary.y.m2)
        if rows.weight is not None:  # weighted least squares: Σw·e² and Σw·(y − ȳ_w)²
            suff.ssr = sse_from_r(summary.R, result.coef_, result.intercept_, bias=bias)
            suff.tss, suff.log_weights = summary.y_w.m2, summary.log_weights
        suff.residuals, suff.meat = residual_pass(
            rows, result.coef_, result.intercept_, group, bias=bias,
            residuals=suff.residual_pass(), cov_type=cov, pinv=suff.pinv())
        return suff

    return statistics(gather, result.coef_, result.intercept_, bias=bias, names=rows.features,
                      cov_type=cov, confidence=confidence,
                      penalized=not_least_squares(config), n_targets=len(rows.targets),
                      n_rows=int(summary.x.n))


def _streamed_plots(rows: Any, result: FitResult, config: TrainConfig,
                    cv: dict | None = None) -> Any:
    """--plot of a streamed fit: the history, and the data plots from a sample of this rank's
    first rows."""
    from trainer.plots import PlotData

    p, t = len(rows.features), len(rows.targets)
    (X, Y), (Xv, Yv) = (_sample(chunks, PLOT_SAMPLE_ROWS, p, t)
                        for chunks in (rows.train(), rows.validation()))
    return PlotData(result.history, result.history_columns, X, Y, Xv, Yv, result.coef_,
                    result.intercept_, config.bias, rows.features, rows.targets,
                    result.best_epoch, cv=cv)


PLOT_SAMPLE_ROWS = 10_000  # the rows a streamed fit's data plots draw


def _sample(chunks: Any, limit: int, p: int, t: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``limit`` rows of a stream of (X, Y) chunks."""
    xs, ys, held = [], [], 0
    for X, Y in chunks:
        xs.append(X[:limit - held])
        ys.append(Y[:limit - held])
        held += len(xs[-1])
        if held >= limit:
            break
    return (np.concatenate(xs) if xs else np.empty((0, p)),
            np.concatenate(ys) if ys else np.empty((0, t)))
