"""Training on real tabular data: categorical columns (treatment coding as statsmodels'
``C(col)``), blanks (``--impute``, ``--missing-indicator``), unseen levels (``--unknown``),
and the export of it all into one ONNX graph that takes raw columns."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from serve import Predictor
from serve.runtime.predictor import PredictionInputError
from tests.serve.conftest import MODELS

pytest.importorskip("torch")
from tests.trainer.commands import export, train  # noqa: E402

CSV = MODELS.parent / "tabular.csv"


def manifest(folder) -> dict:
    return json.loads((folder / "model.json").read_text())


def error_line(res) -> str:
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr, res.stderr
    return res.stderr.split(": error: ", 1)[1].rstrip("\n")


# ------------------------------------------------------------------ statsmodels, by name

@pytest.fixture(scope="module")
def grunfeld(tmp_path_factory):
    sm = pytest.importorskip("statsmodels.datasets.grunfeld")
    data = sm.load_pandas().data
    path = tmp_path_factory.mktemp("grunfeld") / "grunfeld.csv"
    data.to_csv(path, index=False)
    return data, path


@pytest.mark.parametrize("formula, flags", [
    ("invest ~ value + capital + C(firm)", ["--exclude", "year"]),
    ("invest ~ value + capital + C(firm) + C(year)", ["--categorical", "year"]),
    ("invest ~ 0 + C(firm) + value + capital", ["--exclude", "year", "--no-bias"]),
    ("invest ~ value + capital + C(firm, Treatment(reference='IBM'))",
     ["--exclude", "year", "--reference", "firm=IBM"]),
    ("invest ~ value + capital + C(firm, Treatment(reference='IBM'))",
     ["--exclude", "year", "--reference", "firm=IBM", "--batch-rows", "40", "--max-memory",
      "1K"]),
])
def test_lstsq_matches_statsmodels_coefficient_by_coefficient(tmp_path, grunfeld, formula,
                                                              flags):
    smf = pytest.importorskip("statsmodels.formula.api")
    data, path = grunfeld
    want = smf.ols(formula, data).fit().params
    train(path, "--target", "invest", "--solver", "lstsq", "--dtype", "float64",
          "--out", tmp_path / "m", "-q", *flags)
    m = manifest(tmp_path / "m")
    got = dict(zip(m["features"], m["model"]["coef_"][0]))
    if m["model"]["bias"]:
        got["Intercept"] = m["model"]["intercept_"][0]
    # statsmodels' C(firm)[T.IBM] is our firm[T.IBM]: the same terms, by name.
    want = {re.sub(r"C\((\w+)[^\[]*\)\[", r"\1[", name): v for name, v in want.items()}
    assert sorted(got) == sorted(want)
    for name, value in want.items():
        assert got[name] == pytest.approx(value, rel=1e-7, abs=1e-9), name


# ------------------------------------------------------------------ encoding and fills

def test_numeric_codes_forced_categorical_sort_as_numbers(tmp_path):
    path = tmp_path / "z.csv"
    path.write_text("zip,x,y\n10,1,3\n2,2,5\n1,3,4\n10,4,9\n2,5,8\n1,6,7\n10,7,13\n")
    train(path, "--categorical", "zip", "--solver", "lstsq", "--out", tmp_path / "m", "-q")
    m = manifest(tmp_path / "m")
    assert m["columns"][0]["levels"] == ["1", "2", "10"]  # as patsy sorts numbers
    assert m["features"] == ["zip[T.2]", "zip[T.10]", "x"]
    export(tmp_path / "m", "-q")
    p = Predictor.load(tmp_path / "m")
    # A JSON number is the same level as its text.
    np.testing.assert_array_equal(p.predict([[10, 1.0], [2, 2.0]]),
                                  p.predict([["10", 1.0], ["2", 2.0]]))


def test_a_blank_without_impute_says_how_to_fill_it(tmp_path):
    res = train(CSV, "--out", tmp_path / "m", code=1)
    assert error_line(res) == (f"{CSV}: row 8, column 'x1': missing value (blank or NaN); pass "
                               "--impute mean "
                               "(or median, most-frequent, constant:V) to fill blanks, or clean "
                               "or drop the row")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("how", ["mean", "median", "most-frequent", "constant:-2.5"])
def test_impute_learns_the_fill_from_the_training_rows(tmp_path, how):
    train(CSV, "--impute", how, "--solver", "lstsq", "--val-fraction", "0.25",
          "--out", tmp_path / "m", "-q")
    m = manifest(tmp_path / "m")
    x1 = np.genfromtxt(CSV, delimiter=",", skip_header=1, usecols=1)
    val = set(m["data"]["validation_indices"])
    observed = np.array([v for i, v in enumerate(x1) if i not in val and not np.isnan(v)])
    values, counts = np.unique(observed, return_counts=True)
    want = {"mean": observed.mean(), "median": np.median(observed),
            "most-frequent": values[np.argmax(counts)], "constant:-2.5": -2.5}[how]
    assert m["columns"][1]["fill"] == pytest.approx(want, rel=1e-12)


def test_missing_indicator_and_a_missing_level(tmp_path):
    path = tmp_path / "d.csv"
    rng = np.random.default_rng(3)
    rows = ["c,a,b,y"]
    for i in range(60):
        c = ["u", "v", ""][i % 3]
        a = "" if i % 5 == 0 else f"{rng.normal():.4f}"
        rows.append(f"{c},{a},{rng.normal():.4f},{rng.normal():.4f}")
    path.write_text("\n".join(rows) + "\n")
    train(path, "--impute", "constant:0", "--missing-indicator", "--solver", "lstsq",
          "--dtype", "float64", "--out", tmp_path / "m", "-q")
    m = manifest(tmp_path / "m")
    assert m["features"] == ["c[T.v]", "c[T.<missing>]", "a", "a[missing]", "b"]
    assert m["columns"][0]["levels"] == ["u", "v", ""]
    assert [c.get("indicator") for c in m["columns"][1:]] == [True, False]  # b had no blanks
    # numpy on the same design matrix, written out by hand
    table = [r.split(",") for r in rows[1:]]
    a = np.array([math.nan if r[1] == "" else float(r[1]) for r in table])
    D = np.column_stack([np.ones(60), [r[0] == "v" for r in table], [r[0] == "" for r in table],
                         np.nan_to_num(a, nan=0.0), np.isnan(a),
                         [float(r[2]) for r in table]])
    beta = np.linalg.lstsq(D, np.array([float(r[3]) for r in table]), rcond=None)[0]
    export(tmp_path / "m", "-q")
    p = Predictor.load(tmp_path / "m")
    got = p.predict([{"c": None, "a": None, "b": 1.0}, {"c": "v", "a": 0.5, "b": 1.0}])
    np.testing.assert_allclose(got[:, 0], [beta @ [1, 0, 1, 0, 1, 1], beta @ [1, 1, 0, .5, 0, 1]],
                               rtol=1e-9)


def test_too_many_levels_is_refused_naming_the_column(tmp_path):
    path = tmp_path / "ids.csv"
    path.write_text("id,x,y\n" + "".join(f"u{i},{i},{2 * i}\n" for i in range(30)))
    res = train(path, "--max-levels", "20", "--out", tmp_path / "m", code=1)
    assert error_line(res) == (f"{path}: column 'id' has 30 levels, more than --max-levels 20; "
                               "pass --exclude id if it is an id or free text, or raise "
                               "--max-levels")
    train(path, "--exclude", "id", "--solver", "lstsq", "--out", tmp_path / "m", "-q")
    assert manifest(tmp_path / "m")["columns"] is None  # numbers only: the plain contract


@pytest.mark.parametrize("flags, message", [
    (["--reference", "city"], "--reference 'city': write COLUMN=LEVEL, e.g. city=Paris"),
    (["--reference", "city=Nice"], "--reference city=Nice: 'Nice' is not a level of 'city' in "
                                   "the training rows (its levels: 'Lyon', 'Paris', 'Rome')"),
    (["--reference", "x1=1"], "--reference x1=1: column 'x1' is numeric; add --categorical x1"),
    (["--reference", "zone=a"], "--reference zone=a: 'zone' is not a feature column"),
    (["--reference", "city=Nice", "--reference", "city=Lyon"],
     "--reference names a column twice; give one level per column"),
    (["--reference", "city=Nice", "--no-bias"], "--reference city=Nice: without an intercept "
     "(--no-bias) the first categorical column, 'city', gets every level and has no reference"),
])
def test_a_reference_level_that_cannot_be_is_refused(tmp_path, flags, message):
    res = train(CSV, "--impute", "mean", *flags, "--out", tmp_path / "m", code=1)
    assert error_line(res) == message
    assert not (tmp_path / "m").exists()


def test_the_reference_level_changes_the_coefficients_not_the_predictions(tmp_path):
    train(CSV, "--impute", "mean", "--solver", "lstsq", "--dtype", "float64", "--out",
          tmp_path / "a", "-q")
    train(CSV, "--impute", "mean", "--solver", "lstsq", "--dtype", "float64", "--reference",
          "city=Paris", "--out", tmp_path / "b", "-q")
    a, b = manifest(tmp_path / "a"), manifest(tmp_path / "b")
    assert [c["reference"] for c in b["columns"] if c["name"] == "city"] == ["Paris"]
    assert "city[T.Lyon]" in b["features"] and "city[T.Paris]" not in b["features"]
    assert a["features"] != b["features"]
    rows = {"city": ["Lyon", "Rome", "Paris"], "x1": [1.0, 2.0, 3.0], "x2": [0.5, 0.0, -1.0]}
    export(tmp_path / "a", "-q")
    export(tmp_path / "b", "-q")
    np.testing.assert_allclose(Predictor.load(tmp_path / "b").predict(rows),
                               Predictor.load(tmp_path / "a").predict(rows), rtol=1e-9)


def test_flags_that_cannot_work_are_refused(tmp_path):
    res = train(CSV, "--missing-indicator", "--out", tmp_path / "m", code=1)
    assert error_line(res) == ("--missing-indicator needs --impute: the indicator marks the "
                               "blanks that --impute fills")
    res = train(CSV, "--impute", "mode", "--out", tmp_path / "m", code=2)
    assert "Invalid value for '--impute': 'mode': use one of mean, median, most-frequent or " \
        "constant:V" in res.stderr
    res = train(CSV, "--categorical", "nope", "--impute", "mean", "--out", tmp_path / "m", code=1)
    assert error_line(res).startswith(f"{CSV}: unknown categorical column 'nope'")


# ------------------------------------------------------------------ unseen levels

def test_unknown_reference_predicts_the_reference_level(tmp_path):
    train(CSV, "--impute", "mean", "--unknown", "reference", "--solver", "lstsq",
          "--dtype", "float64", "--out", tmp_path / "m", "-q")
    export(tmp_path / "m", "-q")
    p = Predictor.load(tmp_path / "m")
    got = p.predict([{"city": c, "x1": 10.0, "x2": 1.0} for c in ("Nice", "Lyon", None, "")])
    assert got[0, 0] == got[1, 0] == got[2, 0] == got[3, 0]
    strict = Predictor.load(MODELS / "tabular")  # the default, --unknown error
    with pytest.raises(PredictionInputError, match="level 'Nice' was not seen in training"):
        strict.predict([{"city": "Nice", "x1": 10.0, "x2": 1.0}])


def test_a_level_seen_only_in_validation_rows(tmp_path):
    path = tmp_path / "rare.csv"
    path.write_text("c,x,y\n" + "".join(f"{'a' if i % 2 else 'b'},{i},{i}\n" for i in range(40))
                    + "zzz,1,1\n")
    res = train(path, "--val-fraction", "0.5", "--seed", "3", "--solver", "lstsq",
                "--out", tmp_path / "m", code=1)
    assert error_line(res) == (f"{path}: row 41 (a validation row), column 'c': level 'zzz' is "
                               "not in the training rows; pass --unknown reference to predict it "
                               "as the reference level, or train without --val-fraction")
    train(path, "--val-fraction", "0.5", "--seed", "3", "--solver", "lstsq", "--unknown",
          "reference", "--out", tmp_path / "m", "-q")


# ------------------------------------------------------------------ every flag keeps working

def test_sgd_with_standardize_reaches_the_exact_fit(tmp_path):
    train(CSV, "--impute", "mean", "--standardize", "--lr", "0.1", "--epochs", "3000",
          "--dtype", "float64", "--out", tmp_path / "m", "-q")
    m = manifest(tmp_path / "m")
    opt = m["metrics"]["exact_least_squares"]
    assert not opt["sgd_short_of_it"]
    assert m["metrics"]["train"]["r2"][0] == pytest.approx(opt["r2"][0], abs=1e-6)


def test_the_summary_lists_the_columns(tmp_path):
    res = train(CSV, "--impute", "mean", "--solver", "lstsq", "--out", tmp_path / "m")
    assert "  columns: city (categorical, 3 levels, reference 'Lyon'), x1 (" in res.output
    assert "x1 (16 blank(s); a blank is 9.63245), x2 (0 blank(s); a blank is -0.0229208)\n" \
        in res.output


def test_export_writes_the_raw_column_graph_and_says_what_torchscript_takes(tmp_path):
    train(CSV, "--impute", "mean", "--solver", "lstsq", "--out", tmp_path / "m", "-q")
    res = export(tmp_path / "m", "--format", "onnx", "--format", "torchscript")
    lines = res.output.splitlines()
    assert lines[0].startswith(f"{tmp_path / 'm' / 'model.onnx'}: onnx agrees with the trained "
                               "model: relative error")
    assert lines[2] == (f"  note: {tmp_path / 'm' / 'model.torchscript.pt'} is the numeric core "
                        "only: it takes the encoded design matrix (the manifest's features, in "
                        "order), not raw columns; model.onnx takes raw columns")
    m = manifest(tmp_path / "m")
    assert m["exports"]["onnx"]["opset"] == 19
    assert [i["type"] for i in m["exports"]["onnx"]["inputs"]] == ["string", "float32",
                                                                   "float32"]
    assert m["exports"]["torchscript"]["input"]["encoded_matrix"] == 4
    res = export(tmp_path / "m", "--opset", "18", "--force", code=1)
    assert error_line(res) == ("--opset 18: this model's categorical columns need opset 19 or "
                               "later (Equal on strings); drop --opset or pass 19")


def test_a_plain_numeric_model_keeps_the_features_tensor(tmp_path):
    import onnxruntime as ort

    path = tmp_path / "n.csv"
    path.write_text("a,b,y\n1,2,3\n2,1,3\n3,5,8\n4,4,8\n")
    train(path, "--solver", "lstsq", "--out", tmp_path / "m", "-q")
    export(tmp_path / "m", "-q")
    assert manifest(tmp_path / "m")["columns"] is None
    sess = ort.InferenceSession(str(tmp_path / "m" / "model.onnx"))
    assert [i.name for i in sess.get_inputs()] == ["features"]
    assert "linreg.columns" not in sess.get_modelmeta().custom_metadata_map
    # --impute on numbers alone gives numeric raw-column inputs that take a blank
    train(path, "--solver", "lstsq", "--impute", "median", "--out", tmp_path / "i", "-q")
    export(tmp_path / "i", "-q")
    p = Predictor.load(tmp_path / "i")
    assert p.columns is not None
    np.testing.assert_allclose(p.predict([[None, 2.0]]), p.predict([[2.5, 2.0]]), rtol=1e-6)


@pytest.mark.skipif("not __import__('torch').cuda.is_available()")
def test_tabular_training_on_cuda_matches_cpu(tmp_path):  # runs on a GPU machine only
    for device in ("cpu", "cuda"):
        train(CSV, "--impute", "mean", "--standardize", "--lr", "0.1", "--epochs", "500",
              "--dtype", "float64", "--device", device, "--out", tmp_path / device, "-q")
    cpu, gpu = manifest(tmp_path / "cpu"), manifest(tmp_path / "cuda")
    assert gpu["training"]["device"].startswith("cuda")
    np.testing.assert_allclose(gpu["model"]["coef_"], cpu["model"]["coef_"], rtol=1e-9)
    export(tmp_path / "cuda", "-q")
    rows = [{"city": "Paris", "x1": None, "x2": 0.5}, {"city": "Rome", "x1": 9.0, "x2": -1.0}]
    np.testing.assert_allclose(Predictor.load(tmp_path / "cuda").predict(rows)[:, 0],
                               [cpu["model"]["intercept_"][0] + np.dot(cpu["model"]["coef_"][0], x)
                                for x in ([1, 0, cpu["columns"][1]["fill"], 0.5], [0, 1, 9.0, -1])],
                               rtol=1e-9)
