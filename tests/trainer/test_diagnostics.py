"""statsmodels' summary diagnostics (issue #22): Omnibus, Jarque–Bera, skew, kurtosis,
Durbin–Watson, VIF and Cook's distance, stored per target in model.json's statistics, equal to
statsmodels to 1e-8 — in memory, streamed in small chunks, and over two processes on a folder
of two files (the same numbers: the residuals' moments are merged, Durbin–Watson's runs joined
in file and row order, the influential rows kept by rank) — and printed by linreg-summary under
the coefficients, which are always shown."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_script

sm = pytest.importorskip("statsmodels.api")
from statsmodels.stats.outliers_influence import OLSInfluence, variance_inflation_factor  # noqa: E402
from statsmodels.stats.stattools import durbin_watson, jarque_bera, omni_normtest  # noqa: E402

N = 240
SKIP = (7, 100)  # rows whose target is blank: dropped, so file rows and fit rows differ


def _data(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A CSV with a categorical column, correlated numbers and heavy-tailed, autocorrelated
    noise; the design matrix statsmodels gets (treatment coding, first level the reference)."""
    rng = np.random.default_rng(11)
    city = rng.choice(["Lyon", "Paris", "Rome"], size=N)
    a = rng.normal(size=N)
    b = 0.7 * a + rng.normal(size=N)
    noise = np.convolve(rng.standard_t(4, size=N + 1), [1, 0.5], mode="valid")
    y = 2 + 1.5 * (city == "Paris") - a + 0.5 * b + noise
    lines = ["city,a,b,y"] + [f"{c},{u:.6f},{v:.6f},{'' if i in SKIP else f'{t:.6f}'}"
                              for i, (c, u, v, t) in enumerate(zip(city, a, b, y))]
    path.write_text("\n".join(lines) + "\n")
    keep = np.array([i not in SKIP for i in range(N)])
    X = np.column_stack([np.ones(N), city == "Paris", city == "Rome",
                         np.round(a, 6), np.round(b, 6)]).astype(float)
    return X[keep], np.round(y, 6)[keep], np.flatnonzero(keep)


def _reference(X, y, file_rows):
    r = sm.OLS(y, X).fit()
    jb, jbp, skew, kurt = jarque_bera(r.resid)
    omni, omnip = omni_normtest(r.resid)
    infl = OLSInfluence(r)
    cooks, lev = infl.cooks_distance[0], infl.hat_matrix_diag
    top = np.argsort(-cooks, kind="stable")[:10]
    return {"omnibus": omni, "omnibus_p_value": omnip, "jarque_bera": jb,
            "jarque_bera_p_value": jbp, "skew": skew, "kurtosis": kurt,
            "durbin_watson": durbin_watson(r.resid),
            "vif": [variance_inflation_factor(X, j) for j in range(1, X.shape[1])],
            "condition_number": None,
            "influence": [(int(file_rows[i]) + 1, cooks[i], lev[i]) for i in top],
            "coef": r.params}


def _check(stats: dict, want: dict) -> None:
    for key in ("omnibus", "omnibus_p_value", "jarque_bera", "jarque_bera_p_value", "skew",
                "kurtosis", "durbin_watson"):
        assert stats[key] == pytest.approx(want[key], rel=1e-8, abs=1e-12), key
    np.testing.assert_allclose(stats["vif"], want["vif"], rtol=1e-8)
    np.testing.assert_allclose(stats["coef"], want["coef"], rtol=1e-8)
    got = [(d["row"], d["cooks_distance"], d["leverage"]) for d in stats["influence"]]
    assert [g[0] for g in got] == [w[0] for w in want["influence"]]
    np.testing.assert_allclose([g[1:] for g in got], [w[1:] for w in want["influence"]],
                               rtol=1e-8)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("diag")
    X, y, rows = _data(folder / "d.csv")
    return folder, _reference(X, y, rows)


def _fit(folder: Path, name: str, **kw) -> dict:
    from trainer.fit import TrainConfig
    from trainer.train import train
    from trainer.train_streamed import train_streamed

    config = TrainConfig(solver="lstsq", dtype="float64")
    source = folder / "d.csv"
    out, _ = (train_streamed(source, out=folder / name, config=config, batch_rows=37, **kw)
              if name == "streamed" else train(source, out=folder / name, config=config, **kw))
    return json.loads((out / "model.json").read_text())


@pytest.mark.parametrize("how", ["memory", "streamed"])
def test_diagnostics_equal_statsmodels(data, how):
    folder, want = data
    _check(_fit(folder, how)["statistics"][0], want)


def test_two_processes_over_two_files_give_the_same(data, tmp_path):
    folder, want = data
    lines = (folder / "d.csv").read_text().splitlines()
    (tmp_path / "parts").mkdir()
    half = 1 + N // 2
    (tmp_path / "parts" / "a.csv").write_text("\n".join(lines[:half]) + "\n")
    (tmp_path / "parts" / "b.csv").write_text("\n".join([lines[0], *lines[half:]]) + "\n")
    res = run_script("linreg-train", tmp_path / "parts", "--solver", "lstsq", "--dtype",
                     "float64", "--nproc", "2", "--batch-rows", "29", "--out", tmp_path / "m",
                     "-q")
    assert res.returncode == 0, res.stderr.decode()
    stats = json.loads((tmp_path / "m" / "model.json").read_text())["statistics"][0]
    # rows are numbered within their file: file 1's rows start again at 1
    want = {**want, "influence": [(r - (N // 2) if r > N // 2 else r, c, h)
                                  for r, c, h in want["influence"]]}
    _check(stats, want)
    files = [d.get("file", 0) for d in stats["influence"]]
    assert files == [1 if r > N // 2 else 0 for r, *_ in data[1]["influence"]]


def test_the_summary_shows_them_and_every_coefficient(data, tmp_path):
    folder, want = data
    res = run_script("linreg-train", folder / "d.csv", "--penalty", "l2", "--alpha", "0.1",
                     "--solver", "lstsq", "--out", tmp_path / "ridge", "-q")
    assert res.returncode == 0, res.stderr.decode()
    text = run_script("linreg-summary", tmp_path / "ridge").stdout.decode()
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.split()
            and line.split()[0] in ("Intercept", "city[T.Paris]", "city[T.Rome]", "a", "b")}
    assert len(rows) == 5 and all(r[1] != "n/a" for r in rows.values())  # coefficients shown
    assert "R²" in text and "n/a" not in text.split("R²")[1].split()[0]  # R² of a ridge fit
    assert "Omnibus:" in text and "Durbin-Watson:" in text and "Prob(JB):" in text
    assert "largest Cook's distance" not in text  # not a least-squares fit
    if not (folder / "memory").exists():
        _fit(folder, "memory")
    text = run_script("linreg-summary", folder / "memory").stdout.decode()
    top = want["influence"][0]
    assert f"largest Cook's distance: row {top[0]} {top[1]:.3g} (leverage {top[2]:.3g})" in text
