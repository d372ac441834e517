"""linreg-summary BIG --compare SMALL (issue #22): the F test of nested fits, equal to
statsmodels' ``compare_f_test`` and ``anova_lm`` to 1e-8; models that cannot be compared are
refused in one line with the way out."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import run_script

sm = pytest.importorskip("statsmodels.api")


@pytest.fixture(scope="module")
def fits(tmp_path_factory):
    """A big fit (a, b, c) and a small one (a), on the same CSV; statsmodels' answer."""
    folder = tmp_path_factory.mktemp("compare")
    rng = np.random.default_rng(21)
    n = 150
    X = rng.normal(size=(n, 3))
    y = 1 + X @ [1.0, 0.3, -0.2] + rng.normal(size=n)
    rows = ["a,b,c,y"] + [f"{r[0]:.6f},{r[1]:.6f},{r[2]:.6f},{t:.6f}" for r, t in zip(X, y)]
    (folder / "d.csv").write_text("\n".join(rows) + "\n")
    X, y = np.round(X, 6), np.round(y, 6)
    for name, features in (("big", "a,b,c"), ("small", "a"), ("other", "b")):
        res = run_script("linreg-train", folder / "d.csv", "--features", features, "--solver",
                         "lstsq", "--dtype", "float64", "--out", folder / name, "-q")
        assert res.returncode == 0, res.stderr.decode()
    big = sm.OLS(y, sm.add_constant(X)).fit()
    small = sm.OLS(y, sm.add_constant(X[:, :1])).fit()
    return folder, big.compare_f_test(small)


def test_the_f_test_equals_statsmodels(fits):
    from statsmodels.stats.anova import anova_lm

    folder, (f, p, df_diff) = fits
    res = run_script("linreg-summary", folder / "big", "--compare", folder / "small")
    assert res.returncode == 0, res.stderr.decode()
    text = res.stdout.decode()
    block = text[text.index("F test of"):]
    line = next(ln for ln in block.splitlines() if ln.strip().startswith(str(folder / "big")[-30:]))
    got_f, got_p = (float(v) for v in line.split()[-2:])
    assert got_f == pytest.approx(f, rel=1e-3) and got_p == pytest.approx(p, rel=1e-2)
    assert int(line.split()[-3]) == df_diff == 2
    assert "the terms" in block and "b, c" in block
    # the full precision, from the same function, against anova_lm too
    from serve.core.manifest import read_manifest
    from trainer.stats import nested_f_tests

    big, small = read_manifest(folder / "big"), read_manifest(folder / "small")
    [got] = nested_f_tests(big, small, big_name="big", small_name="small")
    assert got["f"] == pytest.approx(f, rel=1e-8) and got["p_value"] == pytest.approx(p, rel=1e-8)
    X = np.loadtxt(folder / "d.csv", delimiter=",", skiprows=1)
    table = anova_lm(sm.OLS(X[:, 3], sm.add_constant(X[:, :1])).fit(),
                     sm.OLS(X[:, 3], sm.add_constant(X[:, :3])).fit())
    assert got["f"] == pytest.approx(table["F"].iloc[1], rel=1e-8)


@pytest.mark.parametrize("big, small, message", [
    ("small", "big", "{small} is not nested in {big}: {big} has no 'b'; give the larger model "
     "first (linreg-summary BIG --compare SMALL)"),
    ("big", "other", None),  # b is in big: nested, fine
    ("small", "other", "{small} is not nested in {big}: {big} has no 'b'; give the larger "
     "model first (linreg-summary BIG --compare SMALL)"),
])
def test_models_that_do_not_nest_are_refused(fits, big, small, message):
    folder, _ = fits
    res = run_script("linreg-summary", folder / big, "--compare", folder / small)
    if message is None:
        assert res.returncode == 0, res.stderr.decode()
        return
    assert res.returncode == 1
    assert res.stderr.decode() == "linreg-summary: error: " + message.format(
        big=folder / big, small=folder / small) + "\n"


def test_other_data_is_refused(fits, tmp_path):
    folder, _ = fits
    lines = (folder / "d.csv").read_text().splitlines()
    (tmp_path / "e.csv").write_text("\n".join(lines[:-1]) + "\n")
    res = run_script("linreg-train", tmp_path / "e.csv", "--features", "a", "--solver", "lstsq",
                     "--out", tmp_path / "m", "-q")
    assert res.returncode == 0
    res = run_script("linreg-summary", folder / "big", "--compare", tmp_path / "m")
    assert res.returncode == 1
    assert res.stderr.decode() == (f"linreg-summary: error: {tmp_path / 'm'} and {folder / 'big'} "
                                   "were trained on different data; nested models are fitted "
                                   "on the same rows\n")
