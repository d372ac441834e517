"""The exported model embedded in other apps: Node.js (onnxruntime-node) and the browser
(onnxruntime-web in headless Chromium) give the Python runtime's predictions.

`make test` installs both (npm packages, Debian's chromium) and sets LINREG_REQUIRE_EMBED=1, so
in CI a missing piece fails instead of skipping.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest

from serve import Predictor
from tests.serve.conftest import MODELS

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
REQUIRED = os.environ.get("LINREG_REQUIRE_EMBED") == "1"


def need(ok: bool, what: str) -> None:
    if not ok:
        if REQUIRED:
            pytest.fail(f"{what} is missing (make setup-embed installs it)")
        pytest.skip(f"{what} is not installed (make setup-embed)")


ROWS = {
    "one": [[1.0], [-2.5], [10.0]],
    "multi": [[1, 2, 3, 4], {"x0": 0.5, "x1": -1, "x2": 0, "x3": 7}],
    "nobias": [[1, 2, 3], [0, 0, 0]],
    "f64": [[1.25, -3.5, 2.0]],
}


def _python(name: str, rows: list) -> np.ndarray:
    p = Predictor.load(MODELS / name)
    return p.predict([r if isinstance(r, list) else [r[f] for f in p.feature_names] for r in rows])


@pytest.mark.parametrize("name", list(ROWS))
def test_node_matches_the_python_runtime(name):
    need(shutil.which("node") is not None, "node")
    need((EXAMPLES / "node" / "node_modules" / "onnxruntime-node").is_dir(), "onnxruntime-node")
    res = subprocess.run(["node", str(EXAMPLES / "node" / "predict.mjs"),
                          str(MODELS / name / "model.onnx")],
                         input=json.dumps(ROWS[name]).encode(), capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr.decode()
    out = json.loads(res.stdout)
    p = Predictor.load(MODELS / name)
    assert (out["features"], out["targets"]) == (p.feature_names, p.target_names)
    np.testing.assert_array_equal(np.asarray(out["predictions"], dtype=p.dtype),
                                  _python(name, ROWS[name]))


def test_node_bad_rows_are_one_line():
    need((EXAMPLES / "node" / "node_modules" / "onnxruntime-node").is_dir(), "onnxruntime-node")
    res = subprocess.run(["node", str(EXAMPLES / "node" / "predict.mjs"),
                          str(MODELS / "multi" / "model.onnx"), '[[1, 2, "x", 4]]'],
                         capture_output=True, timeout=60)
    assert res.returncode == 1
    assert res.stderr.decode() == ("linreg-node-predict: error: row 1, column 'x2': \"x\" is not "
                                   "a finite number\n")


# A tabular model: raw values, a blank as null, every level (tests/serve/test_tabular.py).
TABULAR_ROWS = [{"city": "Paris", "x1": None, "x2": 0.5}, ["Rome", 12.0, -1.0],
                {"city": "Lyon", "x1": 7.5, "x2": 2.0}]


def test_node_feeds_raw_columns_to_a_tabular_model():
    need((EXAMPLES / "node" / "node_modules" / "onnxruntime-node").is_dir(), "onnxruntime-node")
    model = MODELS / "tabular" / "model.onnx"
    res = subprocess.run(["node", str(EXAMPLES / "node" / "predict.mjs"), str(model)],
                         input=json.dumps(TABULAR_ROWS).encode(), capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr.decode()
    out = json.loads(res.stdout)
    assert out["features"] == ["city", "x1", "x2"]
    p = Predictor.load(MODELS / "tabular")
    want = p.predict([r if isinstance(r, dict) else dict(zip(p.feature_names, r))
                      for r in TABULAR_ROWS])
    np.testing.assert_allclose(np.asarray(out["predictions"]), want, rtol=1e-12)
    res = subprocess.run(["node", str(EXAMPLES / "node" / "predict.mjs"), str(model),
                          '[["Nice", 1, 2]]'], capture_output=True, timeout=60)
    assert res.returncode == 1
    assert res.stderr.decode() == ("linreg-node-predict: error: row 1, column 'city': level "
                                   "\"Nice\" was not seen in training (known: \"Lyon\", "
                                   "\"Paris\", \"Rome\"); --on-unknown reference predicts it "
                                   "as the reference level, --on-unknown nan gives the row NaN\n")


# R's way of writing blanks: the model's NA tokens ("NA", "N/A", ...) are blanks in Node too.
R_ROWS = [{"city": "NA", "x1": "NA", "x2": 0.5}, ["Rome", "N/A", -1.0], ["null", 7.5, 2.0]]
R_AS_BLANKS = [{"city": None, "x1": None, "x2": 0.5}, {"city": "Rome", "x1": None, "x2": -1.0},
               {"city": "", "x1": 7.5, "x2": 2.0}]


def test_node_reads_the_models_na_tokens_as_blanks():
    need((EXAMPLES / "node" / "node_modules" / "onnxruntime-node").is_dir(), "onnxruntime-node")
    res = subprocess.run(["node", str(EXAMPLES / "node" / "predict.mjs"),
                          str(MODELS / "rstyle" / "model.onnx")],
                         input=json.dumps(R_ROWS).encode(), capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr.decode()
    want = Predictor.load(MODELS / "rstyle").predict(R_AS_BLANKS)
    np.testing.assert_allclose(json.loads(res.stdout)["predictions"], want, rtol=1e-12)


# An unseen level (row 1) and a blank city never seen in training (row 3), per call policy.
UNSEEN_ROWS = [{"city": "Nice", "x1": 1.0, "x2": 2.0}, ["Rome", None, 1.0], [None, 2.0, 2.0]]


@pytest.mark.parametrize("policy", ["nan", "reference"])
def test_node_takes_the_per_call_policy_as_python_does(policy):
    need((EXAMPLES / "node" / "node_modules" / "onnxruntime-node").is_dir(), "onnxruntime-node")
    res = subprocess.run(["node", str(EXAMPLES / "node" / "predict.mjs"),
                          str(MODELS / "tabular" / "model.onnx"), json.dumps(UNSEEN_ROWS),
                          "--on-unknown", policy], capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr.decode()
    p = Predictor.load(MODELS / "tabular")
    want = p.predict([r if isinstance(r, dict) else dict(zip(p.feature_names, r))
                      for r in UNSEEN_ROWS], on_unknown=policy)
    got = np.array([[np.nan if v is None else v for v in row]
                    for row in json.loads(res.stdout)["predictions"]])
    np.testing.assert_allclose(got, want, rtol=1e-12)
    warned = res.stderr.decode() == (
        "linreg-node-predict: warning: 2 of 3 row(s) could not be predicted (a level not seen "
        "in training, or a blank with no fill): their predictions are null (--on-unknown nan)\n")
    assert warned == (policy == "nan")


# A --formula model (tests/fixtures/make_models.py FORMULA): raw columns in, the formula inside.
FORMULA_ROWS = [{"city": "Paris", "x2": 0.5}, {"city": "Rome", "x2": -1.25},
                {"city": "Lyon", "x2": 2.0}]


def test_node_runs_a_formula_model_as_python_does():
    need((EXAMPLES / "node" / "node_modules" / "onnxruntime-node").is_dir(), "onnxruntime-node")
    res = subprocess.run(["node", str(EXAMPLES / "node" / "predict.mjs"),
                          str(MODELS / "formula" / "model.onnx"), json.dumps(FORMULA_ROWS)],
                         capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr.decode()
    want = Predictor.load(MODELS / "formula").predict(FORMULA_ROWS)
    np.testing.assert_allclose(json.loads(res.stdout)["predictions"], want, rtol=1e-12)


def test_node_prints_the_intervals_of_a_model_that_has_them():
    need((EXAMPLES / "node" / "node_modules" / "onnxruntime-node").is_dir(), "onnxruntime-node")
    rows = [r if isinstance(r, dict) else dict(zip(["city", "x1", "x2"], r))
            for r in TABULAR_ROWS]
    res = subprocess.run(["node", str(EXAMPLES / "node" / "predict.mjs"),
                          str(MODELS / "intervals" / "model.onnx")],
                         input=json.dumps(rows).encode(), capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr.decode()
    out = json.loads(res.stdout)
    want = Predictor.load(MODELS / "intervals").predict_intervals(rows)
    np.testing.assert_allclose(out["predictions"], want["prediction"], rtol=1e-12)
    for name in ("prediction_lower", "prediction_upper", "mean_lower", "mean_upper"):
        np.testing.assert_allclose(out[name], want[name], rtol=1e-12)


def test_node_prints_the_contributions_that_add_up_to_the_prediction():
    need((EXAMPLES / "node" / "node_modules" / "onnxruntime-node").is_dir(), "onnxruntime-node")
    rows = [*FORMULA_ROWS, {"city": "Nice", "x2": 1.0}]
    res = subprocess.run(["node", str(EXAMPLES / "node" / "predict.mjs"),
                          str(MODELS / "explain" / "model.onnx"), json.dumps(rows),
                          "--on-unknown", "nan"], capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr.decode()
    out = json.loads(res.stdout)
    e = Predictor.load(MODELS / "explain").explain(rows, on_unknown="nan")
    assert out["baseline"] == e.baseline[0]
    assert out["contributions"][3] == dict.fromkeys(e.terms)  # the unseen level: null
    got = np.array([[r[t] for t in e.terms] for r in out["contributions"][:3]])
    np.testing.assert_array_equal(got, e.contributions[:3, 0, :].astype(np.float64))
    np.testing.assert_allclose(out["baseline"] + got.sum(axis=1),
                               np.array(out["predictions"][:3])[:, 0], rtol=1e-6)


class _Static(http.server.SimpleHTTPRequestHandler):
    """examples/ as a static site, and the fixture models under /models/."""

    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".mjs": "text/javascript", ".wasm": "application/wasm"}

    def translate_path(self, path: str) -> str:
        path = path.split("?")[0]
        if path.startswith("/models/"):
            return str(MODELS / path.removeprefix("/models/"))
        return super().translate_path(path)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def site():
    handler = functools.partial(_Static, directory=str(EXAMPLES))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _dom(url: str) -> str:
    with tempfile.TemporaryDirectory() as profile:
        res = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                              "--disable-quic", "--no-first-run", "--disable-background-networking",
                              "--disable-component-update", "--disable-sync",
                              f"--user-data-dir={profile}", "--virtual-time-budget=20000",
                              "--dump-dom", url], capture_output=True, timeout=120)
    assert res.returncode == 0, res.stderr.decode()[-2000:]
    return res.stdout.decode()


@pytest.mark.parametrize("name", ["multi", "f64"])
def test_browser_page_predicts_like_python(site, name):
    need(_chromium() is not None, "Debian's chromium")
    need((EXAMPLES / "web" / "node_modules" / "onnxruntime-web").is_dir(), "onnxruntime-web")
    row = ROWS[name][0]
    dom = _dom(f"{site}/web/index.html?model=/models/{name}/model.onnx"
               f"&row={','.join(map(str, row))}")
    assert '<body data-state="done">' in dom, dom[-3000:]
    got = json.loads(dom.split('data-predictions="')[1].split('"')[0].replace("&quot;", '"'))
    p = Predictor.load(MODELS / name)
    np.testing.assert_array_equal(np.asarray(got, dtype=p.dtype), _python(name, [row])[0])
    for target in p.target_names:
        assert f"{target} = " in dom


def test_browser_page_reports_a_missing_model(site):
    need(_chromium() is not None, "Debian's chromium")
    need((EXAMPLES / "web" / "node_modules" / "onnxruntime-web").is_dir(), "onnxruntime-web")
    dom = _dom(f"{site}/web/index.html?model=/models/none/model.onnx")
    assert '<body data-state="error">' in dom
    assert "cannot fetch /models/none/model.onnx: HTTP 404" in dom


def test_browser_page_offers_the_levels_and_takes_a_blank(site):
    need(_chromium() is not None, "Debian's chromium")
    need((EXAMPLES / "web" / "node_modules" / "onnxruntime-web").is_dir(), "onnxruntime-web")
    dom = _dom(f"{site}/web/index.html?model=/models/tabular/model.onnx&row=Paris,,0.5")
    assert '<body data-state="done">' in dom, dom[-3000:]
    assert '<select name="city"><option value="Lyon">Lyon</option><option value="Paris">' \
        'Paris</option><option value="Rome">Rome</option></select>' in dom
    got = json.loads(dom.split('data-predictions="')[1].split('"')[0].replace("&quot;", '"'))
    want = Predictor.load(MODELS / "tabular").predict([{"city": "Paris", "x1": None, "x2": 0.5}])
    np.testing.assert_allclose(got, want[0], rtol=1e-12)


def test_browser_page_reads_na_as_a_blank(site):
    need(_chromium() is not None, "Debian's chromium")
    need((EXAMPLES / "web" / "node_modules" / "onnxruntime-web").is_dir(), "onnxruntime-web")
    dom = _dom(f"{site}/web/index.html?model=/models/rstyle/model.onnx&row=NA,NA,0.5")
    assert '<body data-state="done">' in dom, dom[-3000:]
    got = json.loads(dom.split('data-predictions="')[1].split('"')[0].replace("&quot;", '"'))
    want = Predictor.load(MODELS / "rstyle").predict([{"city": None, "x1": None, "x2": 0.5}])
    np.testing.assert_allclose(got, want[0], rtol=1e-12)


def test_browser_page_runs_a_formula_model(site):
    need(_chromium() is not None, "Debian's chromium")
    need((EXAMPLES / "web" / "node_modules" / "onnxruntime-web").is_dir(), "onnxruntime-web")
    dom = _dom(f"{site}/web/index.html?model=/models/formula/model.onnx&row=Lyon,2")
    assert '<body data-state="done">' in dom, dom[-3000:]
    got = json.loads(dom.split('data-predictions="')[1].split('"')[0].replace("&quot;", '"'))
    want = Predictor.load(MODELS / "formula").predict([{"city": "Lyon", "x2": 2.0}])
    np.testing.assert_allclose(got, want[0], rtol=1e-12)


def test_browser_page_shows_the_intervals(site):
    need(_chromium() is not None, "Debian's chromium")
    need((EXAMPLES / "web" / "node_modules" / "onnxruntime-web").is_dir(), "onnxruntime-web")
    dom = _dom(f"{site}/web/index.html?model=/models/intervals/model.onnx&row=Rome,12,-1")
    assert '<body data-state="done">' in dom, dom[-3000:]
    assert "(95% prediction interval " in dom
    got = json.loads(dom.split('data-intervals="')[1].split('"')[0].replace("&quot;", '"'))
    want = Predictor.load(MODELS / "intervals").predict_intervals(
        [{"city": "Rome", "x1": 12.0, "x2": -1.0}])
    for name, values in got.items():
        np.testing.assert_allclose(values, want[name][0], rtol=1e-12)


def _screenshot(url: str, path: Path) -> None:
    with tempfile.TemporaryDirectory() as profile:
        res = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                              "--disable-quic", "--no-first-run", "--disable-background-networking",
                              "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                              f"--user-data-dir={profile}", "--virtual-time-budget=20000",
                              "--window-size=800,1000", f"--screenshot={path}", url],
                             capture_output=True, timeout=120)
    assert res.returncode == 0 and path.is_file(), res.stderr.decode()[-2000:]


def test_browser_page_draws_the_contributions(site, tmp_path):
    """The page lists each term's contribution (the numbers Python gives) and draws them: one
    bar per term, green right of the axis for one that raises the prediction, red left for one
    that lowers it, the largest half the track wide (read back from a screenshot)."""
    need(_chromium() is not None, "Debian's chromium")
    need((EXAMPLES / "web" / "node_modules" / "onnxruntime-web").is_dir(), "onnxruntime-web")
    Image = pytest.importorskip("PIL.Image")
    url = f"{site}/web/index.html?model=/models/explain/model.onnx&row=Rome,3.5"
    dom = _dom(url)
    assert '<body data-state="done">' in dom, dom[-3000:]
    got = json.loads(dom.split('data-contributions="')[1].split('"')[0].replace("&quot;", '"'))
    e = Predictor.load(MODELS / "explain").explain([{"city": "Rome", "x2": 3.5}])
    assert list(got) == e.terms
    np.testing.assert_allclose([got[t] for t in e.terms], e.contributions[0, 0], rtol=1e-6)
    assert "baseline 10.00248 (the mean prediction)" in dom
    shot = tmp_path / "page.png"
    _screenshot(url, shot)
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    share = e.contributions[0, 0]
    for colour, sign in (((0x1b, 0x78, 0x37), 1), ((0xb2, 0x18, 0x2b), -1)):
        mask = (np.abs(pixels - colour).sum(axis=2) <= 6)
        rows_with = np.flatnonzero(mask.any(axis=1))
        # one bar per term of that sign, each about 1.1rem (~17 px) tall
        bars = 1 + int((np.diff(rows_with) > 1).sum()) if len(rows_with) else 0
        assert bars == int((np.sign(share) == sign).sum()), (colour, bars)
    widths = [int(mask_row.sum()) for mask_row in
              (np.abs(pixels - (0x1b, 0x78, 0x37)).sum(axis=2) <= 6)
              | (np.abs(pixels - (0xb2, 0x18, 0x2b)).sum(axis=2) <= 6)]
    largest = max(widths)
    # the widest bar is the largest |contribution|; the others in proportion to it (±2 px)
    by_size = sorted(np.abs(share), reverse=True)
    assert by_size[1] / by_size[0] * largest == pytest.approx(
        sorted({w for w in widths if w}, reverse=True)[1], abs=2)
