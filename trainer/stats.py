"""Inference statistics of a fitted linear model, as statsmodels' OLS reports them.

Computed in float64 over the training rows at the *saved* parameters (exact or SGD), one entry
per target, arrays in the order intercept first, then the coefficients in the manifest's
feature order:

1. the design matrix Z = [1, X] (no column of ones without a bias), its QR and the SVD of R,
   which give (ZᵀZ)⁻¹ without forming ZᵀZ (forming it squares the condition number: Longley loses half
   its digits that way) and the condition number;
2. residuals, σ̂² = SSR / (n - p), and the covariance of the estimates: σ̂²(ZᵀZ)⁻¹
   (``nonrobust``) or the sandwich (ZᵀZ)⁻¹ Zᵀ diag(ωᵢ) Z (ZᵀZ)⁻¹ with ω = e² (HC0),
   e²·n/(n-p) (HC1), e²/(1-h) (HC2), e²/(1-h)² (HC3), h the leverages;
3. standard errors, t, two-sided p-values and confidence intervals from Student's t with
   n - p degrees of freedom (the normal distribution under a robust covariance, as
   statsmodels does); R², adjusted R², the F test of all slopes (a Wald test under the
   chosen covariance, as statsmodels does), the log-likelihood, AIC and BIC.

4. the diagnostics of statsmodels' summary: Omnibus, Jarque–Bera, skew, kurtosis and
   Durbin–Watson of the residuals, the condition number, VIF per feature, and the rows with
   the largest Cook's distance (leverage hᵢ = |zᵢ W|² from the SVD of R).

What is not defined says so (``not_defined``: name -> reason) instead of a misleading number:
R²/F without a bias, everything but R² with a penalty (the estimates are not OLS), everything
that needs σ̂ with no residual degrees of freedom. The coefficients are always recorded.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

COV_TYPES = ("nonrobust", "HC0", "HC1", "HC2", "HC3")
INFERENCE = "inference.npz"  # the covariance of the estimates and σ̂, for intervals at export
STREAMED_NO_STATISTICS = ("trained streamed by an older linreg, which kept no statistics of "
                          "streamed fits: train it again")


@dataclass
class Inference:
    """The statistics of every target, and what the exporter needs for prediction intervals:
    ``cov`` (targets, p, p), the covariance of the estimates, and ``sigma`` per target."""

    per_target: list[dict[str, Any]]
    cov: np.ndarray | None
    sigma: np.ndarray | None
    warnings: list[str] = field(default_factory=list)  # the design's problems, in words


_ALL = ("std_err", "t", "p_value", "conf_int", "f_stat", "f_p_value", "sigma", "log_likelihood",
        "aic", "bic", "adj_r2", "r2")


def inference(X: np.ndarray, Y: np.ndarray, coef: np.ndarray, intercept: np.ndarray, *,
              bias: bool, names: list[str], cov_type: str = "nonrobust",
              confidence: float = 0.95, penalized: str | None = None,
              weights: np.ndarray | None = None, rows: np.ndarray | None = None) -> Inference:
    """The statistics of ``Y ≈ X coefᵀ + intercept`` (see the module docstring); with
    ``weights``, those of weighted least squares (statsmodels' WLS: everything on the rows
    scaled by √w, R² against the weighted mean, the log-likelihood plus ½Σlog w).

    ``rows``: the 0-based data rows of ``X``'s rows in their file, for the residual
    diagnostics (Durbin–Watson follows them; the influential rows are named by them).

    Statistics never cost the fit: this never raises on the numbers. Should a degenerate design
    defeat the algebra (a singular or non-finite matrix), every statistic is ``not_defined``
    with the reason, and the model is saved all the same."""
    def gather() -> Sufficient:
        # 1. the design matrix, its R factor, the residuals at the saved parameters
        n = X.shape[0]
        Z = np.hstack([np.ones((n, 1)), X]) if bias else np.asarray(X, dtype=np.float64)
        beta = _betas(coef, intercept, bias)
        resid = Y - Z @ beta.T
        if weights is None:
            tss = ((Y - Y.mean(axis=0)) ** 2).sum(axis=0)
            log_w = None
        else:
            root = np.sqrt(weights)
            Z, resid = Z * root[:, None], resid * root[:, None]
            tss = weights @ (Y - np.average(Y, axis=0, weights=weights)) ** 2
            log_w = float(np.sum(np.log(weights))) if np.all(weights > 0) else math.nan
        # Z = QR: Z's singular values and right vectors without an n x p SVD
        R = np.linalg.qr(Z, mode="r") if n >= Z.shape[1] else Z
        suff = Sufficient(n=n, R=R, ssr=(resid**2).sum(axis=0), tss=tss, log_weights=log_w)
        if cov_type != "nonrobust":
            suff.meat = robust_meat(Z, resid, cov_type, suff.pinv())
        suff.residuals = suff.residual_pass()
        suff.residuals.add(Z, resid, np.arange(n) if rows is None else rows)
        return suff

    return statistics(gather, coef, intercept, bias=bias, names=names, cov_type=cov_type,
                      confidence=confidence, penalized=penalized, n_targets=Y.shape[1],
                      n_rows=X.shape[0])


@dataclass
class Pinv:
    """(ZᵀZ)⁺ from the SVD of R, and what the leverages and the summary need of it."""

    gram_inv: np.ndarray
    rank: int
    cond: float
    W: np.ndarray  # Vᵀ's first rank rows scaled by 1/S: leverage hᵢ = |zᵢ W|²

    @classmethod
    def of(cls, R: np.ndarray, n_rows: int) -> Pinv:
        S, Vt = np.linalg.svd(R, full_matrices=False)[1:]
        rank = int(np.sum(S > S[0] * max(n_rows, R.shape[1]) * np.finfo(float).eps)) \
            if S.size else 0
        cond = float(S[0] / S[-1]) if S.size and S[-1] > 0 else math.inf
        S_inv = np.where(np.arange(len(S)) < rank, 1.0 / np.where(S > 0, S, 1.0), 0.0)
        return cls((Vt.T * S_inv**2) @ Vt, rank, cond, Vt.T[:, :rank] * S_inv[:rank])


@dataclass
class Sufficient:
    """What the statistics need of the training rows, gathered in one place whether the rows
    are in memory or streamed (summed chunk by chunk and rank by rank): the row count, the R
    factor of the (weighted) design Z = [1, X], per target the residual and total sums of
    squares at the saved parameters, and for a robust covariance the "meat" Σ ωᵢ zᵢzᵢᵀ."""

    n: int
    R: np.ndarray
    ssr: np.ndarray
    tss: np.ndarray
    meat: np.ndarray | None = None  # (targets, p, p), HC0-HC3 only
    log_weights: float | None = None  # Σ log w for WLS' log-likelihood (nan: a zero weight)
    residuals: Residuals | None = None  # the residual diagnostics' sums (one more pass)
    _pinv: Pinv | None = None

    def pinv(self) -> Pinv:
        if self._pinv is None:
            self._pinv = Pinv.of(self.R, self.n)
        return self._pinv

    def residual_pass(self) -> Residuals:
        """An empty :class:`Residuals` for these rows' fit, to add the residuals to."""
        pinv = self.pinv()
        with np.errstate(divide="ignore", invalid="ignore"):
            sigma2 = self.ssr / (self.n - pinv.rank) if self.n > pinv.rank else \
                np.full_like(self.ssr, np.nan)
        return Residuals(pinv.W, sigma2, pinv.rank)


def robust_meat(Z: np.ndarray, resid: np.ndarray, cov_type: str, pinv: Pinv) -> np.ndarray:
    """Σ ωᵢ zᵢzᵢᵀ per target over these rows (a chunk's share, to be summed): ω = e² (HC0,
    and HC1, whose n/(n-p) is applied to the sum), e²/(1-h) (HC2), e²/(1-h)² (HC3)."""
    omega = resid**2
    if cov_type in ("HC2", "HC3"):
        h = np.sum((Z @ pinv.W) ** 2, axis=1)
        omega = omega / ((1 - h) if cov_type == "HC2" else (1 - h) ** 2)[:, None]
    return np.einsum("nt,np,nq->tpq", omega, Z, Z)


def _betas(coef: np.ndarray, intercept: np.ndarray, bias: bool) -> np.ndarray:
    """(targets, p): the intercept first, then the coefficients, as Z's columns."""
    coef = np.asarray(coef, dtype=np.float64)
    return np.hstack([np.asarray(intercept, dtype=np.float64)[:, None], coef]) if bias else coef


def statistics(gather: Callable[[], Sufficient], coef: np.ndarray, intercept: np.ndarray, *,
               bias: bool, names: list[str], cov_type: str, confidence: float,
               penalized: str | None, n_targets: int, n_rows: int) -> Inference:
    """The statistics from what ``gather`` collects (see :class:`Sufficient`); never raises on
    the numbers: what the algebra cannot do is ``not_defined`` with its reason."""
    try:
        with np.errstate(all="ignore"):
            return _statistics(gather(), _betas(coef, intercept, bias), bias=bias, names=names,
                               cov_type=cov_type, confidence=confidence, penalized=penalized)
    except (np.linalg.LinAlgError, ValueError, ArithmeticError) as e:
        reason = f"the statistics could not be computed on this design ({str(e) or type(e).__name__})"
        labels = (["Intercept"] if bias else []) + list(names)
        entries = [{"target_index": t, "names": labels, "n_obs": n_rows, "df_model": None,
                    "df_resid": None, "cov_type": cov_type, "confidence": confidence,
                    "condition_number": None, "not_defined": dict.fromkeys(_ALL, reason)}
                   for t in range(n_targets)]
        return Inference(entries, None, None)


@dataclass(frozen=True)
class Distribution:
    """Student's t (``df`` given) or the standard normal: the survival function and quantile
    the statistics need, from ``scipy.special`` (what ``scipy.stats`` calls inside, without its
    second of import)."""

    df: float | None = None

    def sf(self, x: Any) -> Any:
        from scipy import special

        x = np.asarray(x, dtype=float)
        return special.ndtr(-x) if self.df is None else special.stdtr(self.df, -x)

    def ppf(self, q: float) -> float:
        from scipy import special

        return float(special.ndtri(q) if self.df is None else special.stdtrit(self.df, q))


def f_sf(x: float, dfn: float, dfd: float) -> float:
    """The F distribution's survival function (``scipy.stats.f.sf``)."""
    from scipy import special

    return float(special.fdtrc(dfn, dfd, x))


def _statistics(suff: Sufficient, betas: np.ndarray, *, bias: bool, names: list[str],
                cov_type: str, confidence: float, penalized: str | None) -> Inference:

    n, p = suff.n, suff.R.shape[1]
    pinv = suff.pinv()
    rank, cond, gram_inv = pinv.rank, pinv.cond, pinv.gram_inv
    df_resid = n - rank
    df_model = rank - (1 if bias else 0)
    labels = (["Intercept"] if bias else []) + list(names)

    out, covs, sigmas = [], [], []
    for t, beta in enumerate(betas):
        # 2. σ̂ and the covariance
        ssr, tss = float(suff.ssr[t]), float(suff.tss[t])
        entry: dict[str, Any] = {"target_index": t, "names": labels, "n_obs": n,
                                 "df_model": df_model, "df_resid": df_resid,
                                 "cov_type": cov_type, "confidence": confidence,
                                 "condition_number": cond}
        why = _not_defined(penalized=penalized, n=n, rank=rank, p=p, bias=bias)
        entry["not_defined"] = why
        if "log_likelihood" not in why:
            entry.update(_likelihood(ssr, n, rank, suff.log_weights))
        if "r2" not in why:
            entry["r2"] = 1 - ssr / tss if tss > 0 else None
        entry["coef"] = beta.tolist()  # always shown, defined or not what is built on them
        entry["ssr"] = ssr  # the residual sum of squares (the nested F test's)
        entry.update(_diagnostics(suff, t, bias=bias, penalized=penalized, rank=rank, p=p))
        if "std_err" in why:
            out.append(_finite(entry))
            covs.append(np.full((p, p), np.nan))
            sigmas.append(math.nan)
            continue
        sigma2 = ssr / df_resid
        cov = _covariance(cov_type, gram_inv, suff.meat[t] if suff.meat is not None else None,
                          sigma2, n, rank)
        se = np.sqrt(np.diag(cov))
        tval = beta / se  # (errstate: a zero std. error gives ±inf or NaN, recorded as null)
        if not np.all(se > 0):
            for k in ("t", "p_value"):
                why.setdefault(k, "a standard error is 0 (the fit is exact: zero residuals), "
                                  "so t is infinite and the p-value 0, as statsmodels reports")
        # Student's t for the classical covariance; the normal for a robust one (asymptotic),
        # as statsmodels does by default (use_t).
        dist = Distribution(df_resid) if cov_type == "nonrobust" else Distribution()
        q = float(dist.ppf(0.5 + confidence / 2))
        entry["distribution"] = "t" if cov_type == "nonrobust" else "normal"
        entry.update(std_err=se.tolist(), t=tval.tolist(),
                     p_value=(2 * dist.sf(np.abs(tval))).tolist(),
                     conf_int=np.column_stack([beta - q * se, beta + q * se]).tolist(),
                     sigma=math.sqrt(sigma2))
        # 3. the fit as a whole
        if "adj_r2" not in why and entry.get("r2") is not None:
            entry["adj_r2"] = 1 - (n - 1) / df_resid * (1 - entry["r2"])
        if "f_stat" not in why and df_model > 0:
            _f_test(entry, why, beta, cov, df_model, df_resid)
        out.append(_finite(entry))
        covs.append(cov)
        sigmas.append(math.sqrt(sigma2))
    usable = all(np.isfinite(c).all() for c in covs)
    return Inference(out, np.stack(covs) if usable else None,
                     np.array(sigmas) if usable else None,
                     design_warnings(suff.R, labels, rank=rank, cond=cond,
                                     penalized=penalized))


def _diagnostics(suff: Sufficient, t: int, *, bias: bool, penalized: str | None, rank: int,
                 p: int) -> dict[str, Any]:
    """The residual diagnostics of target ``t`` (when the rows were read for them), VIF per
    feature (a full-rank design), and the influential rows (least squares only: Cook's
    distance is built on the OLS hat matrix)."""
    out: dict[str, Any] = {}
    if rank == p:
        out["vif"] = vif(suff.R, suff.pinv().gram_inv, suff.n, bias=bias)
    if suff.residuals is not None and suff.residuals.n:
        out.update(residual_diagnostics(suff.residuals, t))
        if penalized or suff.n <= rank:
            out.pop("influence")
    return out


CONDITION_NOTE = 1000.0  # statsmodels' summary notes a condition number above this


def design_warnings(R: np.ndarray, labels: list[str], *, rank: int, cond: float,
                    penalized: str | None) -> list[str]:
    """What is wrong with the design, in words: columns that are linear combinations of
    earlier ones (R's "aliased" coefficients: not determined by the data), or a condition
    number past statsmodels' note. A penalized fit has neither problem:
    the penalty decides what the data cannot."""
    p = R.shape[1]
    if penalized:
        return []
    if rank < p:
        # 1. an upper-triangular factor in the labels' order (the streamed R is permuted)
        T = np.linalg.qr(R, mode="r")
        # 2. a column's own share: its distance from the span of the columns before it
        share = np.abs(np.diag(T)) / np.maximum(np.linalg.norm(T, axis=0), np.finfo(float).tiny)
        aliased = sorted(np.argsort(share, kind="stable")[:p - rank])
        names = ", ".join(repr(labels[j]) for j in aliased[:10]) + \
            (f" and {len(aliased) - 10} more" if len(aliased) > 10 else "")
        return [f"the design has rank {rank} for {p} columns: {names} "
                f"{'is a linear combination' if len(aliased) == 1 else 'are linear combinations'}"
                " of earlier columns, so the fit cannot tell their coefficients apart; "
                "--exclude such a column (or merge the levels that always go together)"]
    if cond > CONDITION_NOTE:
        return [condition_note(cond)]
    return []


def condition_note(cond: float | None) -> str:
    """The one wording of statsmodels' large-condition-number note (training and summary)."""
    shown = "inf" if cond is None or not math.isfinite(cond) else f"{cond:.3g}"
    return (f"the condition number is large ({shown}): strong collinearity or columns on very "
            "different scales, so small changes in the data can move the coefficients a lot "
            "(statsmodels notes the same); check the columns, or --standardize")


SE_DISTANCE = 0.1  # SGD's coefficients this many standard errors from the optimum: said


def sgd_distance(metrics: dict[str, Any], stats: Inference, coef: np.ndarray,
                 intercept: np.ndarray, *, bias: bool) -> list[str]:
    """For an SGD fit (``metrics["exact_least_squares"]`` holds the optimum): record how many
    standard errors (the statistics') its coefficients are from the exact optimum (the largest,
    and whose), and return the warning when that is more than :data:`SE_DISTANCE` and the
    train metrics alone did not already say SGD stopped short: its p-values would describe
    coefficients the data does not support. Data on an exact plane (the optimum leaves no
    residual, as the tutorial's) has no standard errors worth the name: nothing is said."""
    opt = metrics.get("exact_least_squares")
    if opt is None or "coef_" not in opt:
        return []
    worst, where = 0.0, None
    saved, best = _betas(coef, intercept, bias), _betas(opt["coef_"], opt["intercept_"], bias)
    for t, entry in enumerate(stats.per_target):
        se = entry.get("std_err")
        if se is None:  # not defined (penalized, rank deficient, ...): nothing to measure by
            return []
        if opt["mse"][t] <= 1e-12 * metrics["train"]["mse"][t]:
            continue  # an exact plane
        se = np.asarray(se, dtype=np.float64)
        with np.errstate(all="ignore"):
            d = np.where(se > 0, np.abs(saved[t] - best[t]) / se, 0.0)
        j = int(np.argmax(d))
        if d[j] > worst:
            worst, where = float(d[j]), entry["names"][j]
    opt["std_errs_from_it"], opt["farthest"] = worst, where
    said = worst > SE_DISTANCE and not opt.get("sgd_short_of_it")
    return [sgd_distance_message(worst, where)] if said else []


def sgd_distance_message(distance: float, name: str | None) -> str:
    """The one wording of SGD's distance from the exact fit (training and summary)."""
    return (f"SGD's coefficients are up to {distance:.3g} standard errors from the exact "
            f"least-squares fit ({name!r} the farthest): the statistics describe the saved "
            "coefficients, not the best fit; train longer, --standardize, or use --solver lstsq")


_EVERYTHING_BUT_FIT = ("std_err", "t", "p_value", "conf_int", "f_stat", "f_p_value", "sigma",
                       "adj_r2")


def _not_defined(*, penalized: str | None, n: int, rank: int, p: int,
                 bias: bool) -> dict[str, str]:
    """Each figure that cannot be given for this fit, with the reason."""
    why: dict[str, str] = {}
    if penalized:
        why = {k: f"the estimates are penalized ({penalized}), not least squares"
               for k in ("std_err", "t", "p_value", "conf_int", "f_stat", "f_p_value", "sigma",
                         "log_likelihood", "aic", "bic", "adj_r2")}
    elif n - rank <= 0:
        why = {k: f"no residual degrees of freedom ({n} rows for {rank} parameters); "
                  "it needs more rows than parameters" for k in _EVERYTHING_BUT_FIT}
    if not bias:
        for k in ("r2", "adj_r2", "f_stat", "f_p_value"):
            why.setdefault(k, "the model has no intercept (--no-bias): R² and the F test "
                              "against a constant are not defined")
    if rank < p:
        why.setdefault("std_err", f"the design matrix has rank {rank} < {p} parameters "
                                  "(collinear columns)")
    if "std_err" in why:  # everything built on the standard errors goes with them
        for k in ("t", "p_value", "conf_int", "f_stat", "f_p_value", "sigma", "adj_r2"):
            why.setdefault(k, why["std_err"])
    return why


def _likelihood(ssr: float, n: int, rank: int, log_weights: float | None) -> dict[str, float]:
    """The Gaussian log-likelihood at σ̂² = SSR/n (WLS: plus ½·Σ log w), AIC and BIC."""
    llf = -n / 2 * (math.log(2 * math.pi) + math.log(ssr / n) + 1) if ssr > 0 else math.inf
    if log_weights is not None:
        llf = llf + 0.5 * log_weights
    return {"log_likelihood": llf, "aic": -2 * llf + 2 * rank,
            "bic": -2 * llf + math.log(n) * rank}


def _f_test(entry: dict[str, Any], why: dict[str, str], beta: np.ndarray, cov: np.ndarray,
            df_model: int, df_resid: int) -> None:
    """The F test of the slopes against zero, by the Wald form (any covariance)."""
    slopes = beta[1:]
    try:
        wald = float(slopes @ np.linalg.solve(cov[1:, 1:], slopes)) / df_model
    except np.linalg.LinAlgError:
        wald = math.nan
    if math.isfinite(wald):
        entry["f_stat"] = wald
        entry["f_p_value"] = f_sf(wald, df_model, df_resid)
    else:
        for k in ("f_stat", "f_p_value"):
            why[k] = ("the covariance of the slopes is singular (an exact fit, or too few "
                      "distinct rows for this covariance): F is infinite or undefined")


def _covariance(cov_type: str, gram_inv: np.ndarray, meat: np.ndarray | None, sigma2: float,
                n: int, rank: int) -> np.ndarray:
    if cov_type == "nonrobust":
        return sigma2 * gram_inv
    if cov_type == "HC1":
        meat = meat * n / (n - rank)
    return gram_inv @ meat @ gram_inv


def _finite(entry: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN or inf: such a value is recorded as null."""
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, list):
            return [clean(x) for x in v]
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        return v
    return {k: clean(v) for k, v in entry.items()}


# ----------------------------------------------------------------------------- summary

def summary_text(manifest: dict[str, Any]) -> str:
    """A statsmodels-like table per target, from a manifest's ``statistics``."""
    lines = []
    for entry, target in zip(manifest.get("statistics") or [], manifest["targets"]):
        level = entry["confidence"]
        lo, hi = f"[{(1 - level) / 2:.3g}", f"{1 - (1 - level) / 2:.3g}]"
        head = [f"{'target':<16}{target:>20}    {'R²':<14}{_num(entry.get('r2')):>12}",
                f"{'rows':<16}{entry['n_obs']:>20,}    {'adj. R²':<14}"
                f"{_num(entry.get('adj_r2')):>12}",
                f"{'df model':<16}{entry['df_model']:>20}    {'F':<14}"
                f"{_num(entry.get('f_stat')):>12}",
                f"{'df residuals':<16}{entry['df_resid']:>20}    {'P(F)':<14}"
                f"{_num(entry.get('f_p_value')):>12}",
                f"{'covariance':<16}{entry['cov_type']:>20}    {'log-lik.':<14}"
                f"{_num(entry.get('log_likelihood')):>12}",
                f"{'sigma':<16}{_num(entry.get('sigma')):>20}    {'AIC':<14}"
                f"{_num(entry.get('aic')):>12}",
                f"{'distribution':<16}{entry.get('distribution') or 'n/a':>20}    "
                f"{'BIC':<14}{_num(entry.get('bic')):>12}"]
        width = max(12, max(len(n) for n in entry["names"]) + 2)
        table = [f"{'':<{width}}{'coef':>12}{'std err':>12}{'t':>10}{'P>|t|':>10}{lo:>12}{hi:>12}"
                 f"{'VIF':>10}"]
        coefs = entry.get("coef") or [None] * len(entry["names"])
        vifs = entry.get("vif") or []
        vifs = [None] * (len(entry["names"]) - len(vifs)) + vifs  # the intercept has none
        for i, name in enumerate(entry["names"]):
            row = [entry.get(k, [None] * len(entry["names"]))[i]
                   for k in ("std_err", "t", "p_value")]
            ci = (entry.get("conf_int") or [[None, None]] * len(entry["names"]))[i]
            table.append(f"{name:<{width}}{_num(coefs[i]):>12}{_num(row[0]):>12}"
                         f"{_num(row[1], 3):>10}{_num(row[2], 3):>10}{_num(ci[0]):>12}"
                         f"{_num(ci[1]):>12}{_num(vifs[i], 3) if vifs[i] else '':>10}".rstrip())
        rule = "=" * max(len(r) for r in table + head)
        lines += [rule, *head, "-" * len(rule), *table, "-" * len(rule),
                  *_residual_block(entry), rule]
        if entry.get("influence"):
            lines.append("largest Cook's distance: " + ", ".join(
                f"row {d['row']}{' of file ' + str(d['file']) if 'file' in d else ''} "
                f"{_num(d['cooks_distance'], 3)} (leverage {_num(d['leverage'], 3)})"
                for d in entry["influence"][:5]))
        by_reason: dict[str, list[str]] = {}
        for what, reason in sorted(entry.get("not_defined", {}).items()):
            by_reason.setdefault(reason, []).append(what)
        for reason, what in by_reason.items():  # one line per reason, not per statistic
            lines.append(f"not defined: {', '.join(what)}: {reason}")
        cond = entry.get("condition_number")
        if cond is None or cond > CONDITION_NOTE:
            lines.append("warning: " + condition_note(cond))
        opt = manifest.get("metrics", {}).get("exact_least_squares")
        if opt and (opt.get("std_errs_from_it") or 0) > SE_DISTANCE:
            lines.append("warning: " + sgd_distance_message(opt["std_errs_from_it"],
                                                            opt.get("farthest")))
        elif opt and opt.get("sgd_short_of_it"):
            lines.append("warning: SGD stopped short of the exact least-squares optimum; these "
                         "statistics describe the saved parameters, not the best fit")
        lines.append("")
    return "\n".join(lines)


def nested_f_tests(big: dict[str, Any], small: dict[str, Any], *, big_name: str,
                   small_name: str) -> list[dict[str, Any]]:
    """Per target, the F test of a model against a smaller one nested in it, as statsmodels'
    ``compare_f_test`` (and ``anova_lm`` of the two) computes it: F = ((SSR_small − SSR_big) /
    (df_small − df_big)) / (SSR_big / df_big), df the residual degrees of freedom. Raises
    ValueError (one line, the way out) when the two cannot be compared."""
    if big["targets"] != small["targets"]:
        raise ValueError(f"{small_name} predicts {small['targets']} but {big_name} "
                         f"{big['targets']}: compare models of the same target")
    if (big.get("data") or {}).get("sha256") != (small.get("data") or {}).get("sha256"):
        raise ValueError(f"{small_name} and {big_name} were trained on different data; "
                         "nested models are fitted on the same rows")
    tests = []
    for b, s in zip(big["statistics"], small["statistics"]):
        if s["n_obs"] != b["n_obs"]:
            raise ValueError(f"{small_name} was fitted on {s['n_obs']:,} rows and {big_name} on "
                             f"{b['n_obs']:,}: nested models are fitted on the same rows")
        if extra := [n for n in s["names"] if n not in b["names"]]:
            raise ValueError(f"{small_name} is not nested in {big_name}: {big_name} has no "
                             f"{extra[0]!r}; give the larger model first (linreg-summary BIG "
                             "--compare SMALL)")
        for name, e in ((big_name, b), (small_name, s)):
            reason = (e.get("not_defined") or {}).get("sigma") or (
                None if e.get("ssr") is not None else
                "no residual sum of squares (trained by an older linreg; train it again)")
            if reason:
                raise ValueError(f"{name}: no F test: {reason}")
        df_b, df_s = b["df_resid"], s["df_resid"]
        if df_s <= df_b:
            raise ValueError(f"{small_name} has no fewer parameters than {big_name} (residual "
                             f"df {df_s} and {df_b}); give the larger model first")
        ssr_b, ssr_s = b["ssr"], s["ssr"]
        f = ((ssr_s - ssr_b) / (df_s - df_b)) / (ssr_b / df_b) if ssr_b > 0 else math.inf
        tests.append({"f": f, "p_value": f_sf(f, df_s - df_b, df_b) if math.isfinite(f) else 0.0,
                      "df_diff": df_s - df_b, "df_resid": (df_s, df_b), "ssr": (ssr_s, ssr_b),
                      "added": [n for n in b["names"] if n not in s["names"]]})
    return tests


def compare_text(big: dict[str, Any], small: dict[str, Any], *, big_name: str,
                 small_name: str) -> str:
    """:func:`nested_f_tests` as statsmodels' ``anova_lm`` table, per target."""
    lines = []
    for target, test in zip(big["targets"], nested_f_tests(big, small, big_name=big_name,
                                                             small_name=small_name)):
        (df_s, df_b), (ssr_s, ssr_b), added = test["df_resid"], test["ssr"], test["added"]
        lines += [f"target {target!r}: F test of {big_name} against {small_name} "
                  f"(statsmodels' compare_f_test)",
                  f"  {'model':<30}{'df_resid':>10}{'ssr':>14}{'df_diff':>9}{'F':>12}"
                  f"{'Pr(>F)':>12}",
                  f"  {small_name[-30:]:<30}{df_s:>10,}{_num(ssr_s):>14}",
                  f"  {big_name[-30:]:<30}{df_b:>10,}{_num(ssr_b):>14}{test['df_diff']:>9}"
                  f"{_num(test['f']):>12}{_num(test['p_value'], 3):>12}",
                  f"  the terms {big_name} adds: {', '.join(added[:10])}"
                  f"{', ...' if len(added) > 10 else ''}", ""]
    return "\n".join(lines)


def _residual_block(entry: dict[str, Any]) -> list[str]:
    """statsmodels' block under the coefficients: the residuals' normality and correlation."""
    pairs = [("Omnibus", "omnibus", "Durbin-Watson", "durbin_watson"),
             ("Prob(Omnibus)", "omnibus_p_value", "Jarque-Bera (JB)", "jarque_bera"),
             ("Skew", "skew", "Prob(JB)", "jarque_bera_p_value"),
             ("Kurtosis", "kurtosis", "Cond. No.", "condition_number")]
    if "skew" not in entry:
        return []
    return [f"{a + ':':<16}{_num(entry.get(ka)):>20}    {b + ':':<18}{_num(entry.get(kb)):>12}"
            for a, ka, b, kb in pairs]


def _num(v: Any, digits: int = 4) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:.{digits}g}"


# ----------------------------------------------------------------------------- diagnostics

INFLUENTIAL = 10  # the rows with the largest Cook's distance the summary lists


@dataclass
class Residuals:
    """What the residual diagnostics need, gathered chunk by chunk in any order (streamed,
    and rank by rank) and merged, per target: the central moments of the residuals (count,
    mean, M2..M4, merged by Pébay's formulas), Durbin–Watson's numerator within runs of
    consecutive rows and each run's ends (joined in row order at the end), and the rows with
    the largest Cook's distance. Residuals and design rows are the whitened ones (√w·e, √w·z)
    of a weighted fit, as statsmodels' diagnostics of WLS use."""

    W: np.ndarray  # Pinv.W: leverage hᵢ = |zᵢ W|²
    sigma2: np.ndarray  # σ̂² per target (Cook's distance)
    k: int  # parameters (the rank): Cook's distance divides by it
    n: int = 0
    mean: np.ndarray | None = None
    m: np.ndarray | None = None  # (3, targets): M2, M3, M4
    dw: np.ndarray | None = None
    runs: list[tuple[Any, Any, np.ndarray, np.ndarray]] = field(default_factory=list)
    top: list[tuple[float, float, Any, int]] = field(default_factory=list)

    def add(self, Z: np.ndarray, E: np.ndarray, rows: np.ndarray, key: Any = 0) -> None:
        """One run of consecutive rows: design rows ``Z``, residuals ``E`` (rows, targets),
        their row numbers ``rows`` (0-based, in their file ``key``)."""
        if not len(E):
            return
        mean = E.mean(axis=0)
        d = E - mean
        m = np.stack([(d**2).sum(axis=0), (d**3).sum(axis=0), (d**4).sum(axis=0)])
        self._merge(len(E), mean, m)
        dw = ((E[1:] - E[:-1]) ** 2).sum(axis=0)
        self.dw = dw if self.dw is None else self.dw + dw
        self.runs.append(((key, int(rows[0])), (key, int(rows[-1])), E[0], E[-1]))
        h = np.sum((Z @ self.W) ** 2, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            cooks = E**2 * (h / (1 - h) ** 2)[:, None] / (self.k * self.sigma2)
        for t in range(E.shape[1]):
            score = -np.nan_to_num(cooks[:, t], nan=-1.0)
            if len(score) > INFLUENTIAL:  # the largest few without sorting the chunk
                score_at = np.argpartition(score, INFLUENTIAL)[:INFLUENTIAL]
            else:
                score_at = np.arange(len(score))
            for i in score_at:
                self.top.append((float(cooks[i, t]), float(h[i]), (key, int(rows[i])), t))
        self._trim()

    def merge(self, other: Residuals) -> None:
        if other.n:
            self._merge(other.n, other.mean, other.m)
            self.dw = other.dw if self.dw is None else self.dw + other.dw
        self.runs += other.runs
        self.top += other.top
        self._trim()

    def _merge(self, nb: int, mean_b: np.ndarray, mb: np.ndarray) -> None:
        if not self.n:
            self.n, self.mean, self.m = nb, mean_b, mb
            return
        na, ma = self.n, self.m
        n, delta = na + nb, mean_b - self.mean
        m2 = ma[0] + mb[0] + delta**2 * na * nb / n
        m3 = (ma[1] + mb[1] + delta**3 * na * nb * (na - nb) / n**2
              + 3 * delta * (na * mb[0] - nb * ma[0]) / n)
        m4 = (ma[2] + mb[2] + delta**4 * na * nb * (na**2 - na * nb + nb**2) / n**3
              + 6 * delta**2 * (na**2 * mb[0] + nb**2 * ma[0]) / n**2
              + 4 * delta * (na * mb[1] - nb * ma[1]) / n)
        self.n, self.mean, self.m = n, self.mean + delta * nb / n, np.stack([m2, m3, m4])

    def _trim(self) -> None:
        self.top.sort(key=lambda c: (-c[0] if math.isfinite(c[0]) else -math.inf, c[2]))
        per: dict[int, int] = {}
        kept = []
        for c in self.top:
            if per.get(c[3], 0) < INFLUENTIAL:
                per[c[3]] = per.get(c[3], 0) + 1
                kept.append(c)
        self.top = kept

    def durbin_watson(self, ssq: np.ndarray) -> np.ndarray:
        """Σ(eₜ − eₜ₋₁)² / Σeₜ² over every row in order: the runs' own sums plus the steps
        between one run's last row and the next run's first."""
        total = self.dw.copy()
        runs = sorted(self.runs, key=lambda r: r[0])
        for a, b in zip(runs, runs[1:]):
            total += (b[2] - a[3]) ** 2
        return total / ssq


def residual_diagnostics(res: Residuals, t: int) -> dict[str, Any]:
    """statsmodels' summary figures of target ``t``'s residuals: Omnibus (D'Agostino's K²,
    scipy's ``normaltest``) and its p-value, Jarque–Bera and its p-value, skew, kurtosis
    (Pearson's, 3 for a normal), Durbin–Watson; and the rows with the largest Cook's distance."""
    n = res.n
    m2, m3, m4 = (res.m[k][t] / n for k in range(3))
    skew = m3 / m2**1.5 if m2 > 0 else math.nan
    kurt = m4 / m2**2 if m2 > 0 else math.nan
    jb = n / 6 * (skew**2 + (kurt - 3) ** 2 / 4)
    ssq = res.m[0][t] + n * res.mean[t] ** 2
    out = {"skew": skew, "kurtosis": kurt, "jarque_bera": jb, "jarque_bera_p_value":
           math.exp(-jb / 2), "durbin_watson": float(res.durbin_watson(
               res.m[0] + n * res.mean**2)[t]) if ssq > 0 else math.nan}
    if n >= 8:
        k2 = _skew_z(skew, n) ** 2 + _kurtosis_z(kurt, n) ** 2
        out.update(omnibus=k2, omnibus_p_value=math.exp(-k2 / 2))
    many = any(key != 0 for _, _, (key, _), _ in res.top)  # rows of a dataset's files
    out["influence"] = [{"row": row + 1, **({"file": key} if many else {}),
                         "cooks_distance": c, "leverage": h}
                        for c, h, (key, row), tt in res.top if tt == t]
    return out


def _skew_z(b2: float, n: int) -> float:
    """scipy.stats.skewtest's z of a sample skewness ``b2`` of ``n`` values."""
    y = b2 * math.sqrt((n + 1) * (n + 3) / (6.0 * (n - 2)))
    beta2 = (3.0 * (n**2 + 27 * n - 70) * (n + 1) * (n + 3)
             / ((n - 2.0) * (n + 5) * (n + 7) * (n + 9)))
    w2 = -1 + math.sqrt(2 * (beta2 - 1))
    delta = 1 / math.sqrt(0.5 * math.log(w2))
    alpha = math.sqrt(2.0 / (w2 - 1))
    y = 1.0 if y == 0 else y
    return delta * math.log(y / alpha + math.sqrt((y / alpha) ** 2 + 1))


def _kurtosis_z(b2: float, n: int) -> float:
    """scipy.stats.kurtosistest's z of a sample (Pearson) kurtosis ``b2`` of ``n`` values."""
    e = 3.0 * (n - 1) / (n + 1)
    varb2 = 24.0 * n * (n - 2) * (n - 3) / ((n + 1) * (n + 1.0) * (n + 3) * (n + 5))
    x = (b2 - e) / math.sqrt(varb2)
    sqrtbeta1 = 6.0 * (n * n - 5 * n + 2) / ((n + 7) * (n + 9)) * math.sqrt(
        (6.0 * (n + 3) * (n + 5)) / (n * (n - 2) * (n - 3)))
    a = 6.0 + 8.0 / sqrtbeta1 * (2.0 / sqrtbeta1 + math.sqrt(1 + 4.0 / sqrtbeta1**2))
    term1 = 1 - 2 / (9.0 * a)
    denom = 1 + x * math.sqrt(2 / (a - 4.0))
    if denom == 0:
        return math.nan
    term2 = math.copysign(((1 - 2.0 / a) / abs(denom)) ** (1 / 3.0), denom)
    return (term1 - term2) / math.sqrt(2 / (9.0 * a))


def vif(R: np.ndarray, gram_inv: np.ndarray, n: int, *, bias: bool) -> list[float | None]:
    """statsmodels' ``variance_inflation_factor`` of each feature (not the intercept): 1/(1 −
    R²ⱼ) of the column regressed on the others, = (its centred sum of squares) × (ZᵀZ)⁻¹ⱼⱼ
    from R alone (uncentred without an intercept, as statsmodels' R² is)."""
    G = R.T @ R
    out = []
    for j in range(1 if bias else 0, G.shape[0]):
        ss = G[j, j] - (G[0, j] ** 2 / n if bias else 0.0)
        value = ss * gram_inv[j, j]
        out.append(float(value) if math.isfinite(value) and value > 0 else None)
    return out
