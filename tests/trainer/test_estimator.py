"""The scikit-learn estimator (issue #25): ``LinregRegressor`` passes scikit-learn's
``check_estimator`` (one check excepted, for a reason written below), works in ``Pipeline``,
``cross_val_score`` and ``GridSearchCV`` — whose choice of ``alpha`` equals
``GridSearchCV(ElasticNet)``'s on the same folds — and is the CLI's own trainer: on the same
rows it gives linreg-train's coefficients, statistics and artifact folder."""

from __future__ import annotations

import json
from dataclasses import fields

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")
pd = pytest.importorskip("pandas")

from sklearn.linear_model import ElasticNet, LinearRegression  # noqa: E402
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from serve import Predictor  # noqa: E402
from tests.trainer.commands import export, train  # noqa: E402
from trainer import LinregRegressor  # noqa: E402
from trainer.config import TrainConfig  # noqa: E402
from trainer.estimator import _CONFIG, _ENCODING  # noqa: E402

EXPECTED_FAILURES = {
    # The check fits 27 rows of 30 features (weights repeating rows). linreg refuses a fit with
    # fewer rows than parameters (its CLI does, and its statistics need the rows), where
    # LinearRegression returns a minimum-norm solution of the underdetermined system.
    "check_sample_weight_equivalence_on_dense_data": "linreg refuses fewer rows than "
                                                     "parameters",
}


@parametrize_with_checks([LinregRegressor()],
                         expected_failed_checks=lambda est: EXPECTED_FAILURES)
def test_scikit_learn_check_estimator(estimator, check):
    check(estimator)


def test_the_parameters_are_the_clis_settings():
    names = {f.name for f in fields(TrainConfig)}
    assert set(_CONFIG) <= names
    assert set(_CONFIG) | {"bias", "log_every", "log_before_step", "alphas", "cv"} == names
    params = LinregRegressor().get_params()
    assert set(_CONFIG) | set(_ENCODING) | {"fit_intercept", "val_fraction", "cov",
                                            "confidence"} == set(params)


@pytest.fixture(scope="module")
def regression():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(120, 5))
    y = X @ [1.5, 0.0, -2.0, 0.3, 0.0] + 2.0 + rng.normal(size=120)
    return X, y


def test_equals_linear_regression_in_a_pipeline_and_cross_val_score(regression):
    X, y = regression
    folds = KFold(5, shuffle=True, random_state=0)
    ours = cross_val_score(make_pipeline(StandardScaler(), LinregRegressor()), X, y, cv=folds)
    theirs = cross_val_score(make_pipeline(StandardScaler(), LinearRegression()), X, y,
                             cv=folds)
    np.testing.assert_allclose(ours, theirs, rtol=1e-10)
    m = LinregRegressor().fit(X, y)
    ref = LinearRegression().fit(X, y)
    np.testing.assert_allclose(m.coef_, ref.coef_, rtol=1e-10)
    assert m.intercept_ == pytest.approx(ref.intercept_, rel=1e-12)
    assert m.n_features_in_ == 5 and m.coef_.shape == (5,)


def test_grid_search_over_alpha_chooses_as_elastic_net(regression):
    """The same objective as scikit-learn's ElasticNet, on the same folds: the same choice,
    the same scores."""
    X, y = regression
    folds = KFold(4, shuffle=True, random_state=1)
    grid = {"alpha": [0.001, 0.01, 0.05, 0.2, 1.0]}
    ours = GridSearchCV(LinregRegressor(penalty="elasticnet", l1_ratio=0.7), grid, cv=folds,
                        scoring="neg_mean_squared_error").fit(X, y)
    theirs = GridSearchCV(ElasticNet(l1_ratio=0.7, tol=1e-12, max_iter=100_000), grid,
                          cv=folds, scoring="neg_mean_squared_error").fit(X, y)
    assert ours.best_params_ == theirs.best_params_
    np.testing.assert_allclose(ours.cv_results_["mean_test_score"],
                               theirs.cv_results_["mean_test_score"], rtol=1e-6)
    np.testing.assert_allclose(ours.best_estimator_.coef_, theirs.best_estimator_.coef_,
                               rtol=1e-6, atol=1e-8)


def test_a_table_with_categorical_columns_and_blanks_is_the_clis_fit(tmp_path):
    """pandas with a text column and blank numbers, and the same rows as Arrow: the design,
    coefficients and statistics of linreg-train on the same CSV; save() writes its folder,
    export() its model.onnx, whose predictions are the estimator's."""
    import pyarrow as pa

    rng = np.random.default_rng(9)
    n = 200
    df = pd.DataFrame({"city": rng.choice(["Lyon", "Paris", "Rome"], n),
                       "x1": np.where(rng.random(n) < 0.1, np.nan, rng.normal(10, 3, n)),
                       "x2": rng.normal(size=n)})
    y = 1 + 2 * (df.city == "Rome") + 0.5 * df.x1.fillna(10) - df.x2 + rng.normal(size=n)
    df.assign(y=y).to_csv(tmp_path / "d.csv", index=False)
    train(tmp_path / "d.csv", "--target", "y", "--impute", "median", "--solver", "lstsq",
          "--dtype", "float64", "--out", tmp_path / "cli", "-q")
    cli = json.loads((tmp_path / "cli" / "model.json").read_text())
    m = LinregRegressor(impute="median").fit(df, y)
    assert list(m.feature_names_out_) == cli["features"]
    assert list(m.feature_names_in_) == ["city", "x1", "x2"]
    np.testing.assert_allclose(m.coef_, cli["model"]["coef_"][0], rtol=1e-10)
    np.testing.assert_allclose(m.statistics_["std_err"], cli["statistics"][0]["std_err"],
                               rtol=1e-10)
    arrow = LinregRegressor(impute="median").fit(pa.Table.from_pandas(df), y)
    np.testing.assert_allclose(arrow.coef_, m.coef_, rtol=1e-12)
    m.export(tmp_path / "est", contributions=True)
    saved = json.loads((tmp_path / "est" / "model.json").read_text())
    assert saved["columns"] == cli["columns"] and saved["features"] == cli["features"]
    new = df.head(5).assign(x1=[None, 3.0, 9.5, None, 12.0])
    np.testing.assert_allclose(Predictor.load(tmp_path / "est").predict(new)[:, 0],
                               m.predict(new), rtol=1e-12)
    res = export(tmp_path / "est", "--format", "onnx", "--force", "-q")
    assert res.exit_code == 0


def test_two_targets_and_errors_as_value_errors(regression):
    X, y = regression
    Y = np.column_stack([y, -y])
    m = LinregRegressor().fit(X, Y)
    assert m.coef_.shape == (2, 5) and m.predict(X).shape == (120, 2)
    assert len(m.statistics_) == 2
    with pytest.raises(ValueError, match=r"^--penalty 'lasso': use one of none, l2, l1, "
                                         r"elasticnet$"):
        LinregRegressor(penalty="lasso").fit(X, y)
    with pytest.raises(ValueError, match="X has 4 features, but LinregRegressor is expecting "
                                         "5 features as input"):
        m.predict(X[:, :4])
