"""What raw columns cost: a tabular model against a plain numeric one, on the same rows, in the
same run (ratios; the absolute figures depend on the machine).

    .venv/bin/python bench/tabular.py --rows 1000000

The table: 2 categorical columns (4 and 6 levels, some blanks), 3 numeric columns (one with
blanks) and the target; the numeric baseline has 5 numeric columns (the categorical ones
replaced by numbers) and no blanks.
1. linreg-predict CSV -> CSV, rows/s: tabular / numeric.
2. Predictor.predict on one record, µs: tabular / numeric (one row as a list).
3. linreg-train --solver lstsq on the same file, seconds: tabular / numeric.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from serve.batch.files import predict_file  # noqa: E402
from serve.runtime.predictor import Predictor  # noqa: E402

BIN = Path(sys.executable).parent


def make_tables(work: Path, rows: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    city = rng.choice(np.array(["Lyon", "Marseille", "Paris", "Toulouse"]), rows)
    energy = rng.choice(np.array(["A", "B", "C", "D", "E", ""]), rows)
    a, b, c = rng.normal(50, 10, rows), rng.normal(0, 1, rows), rng.normal(5, 2, rows)
    y = 3 * a + 2 * b - c + (city == "Paris") * 40 + rng.normal(0, 1, rows)
    a_blank = np.where(rng.random(rows) < 0.1, None, a)
    tab = pa.table({"city": city, "energy": pa.array(energy.tolist()),
                    "a": pa.array(a_blank.tolist(), pa.float64()), "b": b, "c": c, "y": y})
    num = pa.table({"city": rng.normal(0, 1, rows), "energy": rng.normal(0, 1, rows),
                    "a": a, "b": b, "c": c, "y": y})
    paths = work / "tabular.csv", work / "numeric.csv"
    for table, path in zip((tab, num), paths):
        pacsv.write_csv(table, path)
    return paths


def train(data: Path, out: Path, *flags: str) -> float:
    start = time.perf_counter()
    subprocess.run([BIN / "linreg-train", data, "--solver", "lstsq", "--out", out, "-q",
                    "--force", *flags], check=True)
    seconds = time.perf_counter() - start
    subprocess.run([BIN / "linreg-export", out, "-q", "--force", "--format", "onnx"], check=True)
    return seconds


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tab_csv, num_csv = make_tables(work, args.rows)
        t_tab = train(tab_csv, work / "tab", "--impute", "mean")
        t_num = train(num_csv, work / "num")
        tab, num = Predictor.load(work / "tab"), Predictor.load(work / "num")
        p_tab = best(lambda: predict_file(tab, tab_csv, work / "o1.csv", force=True), args.repeats)
        p_num = best(lambda: predict_file(num, num_csv, work / "o2.csv", force=True), args.repeats)
        record = {"city": "Paris", "energy": "", "a": None, "b": 0.5, "c": 4.0}
        one_tab = min(timeit.repeat(lambda: tab.predict([record]), number=2000, repeat=5)) / 2000
        row = [[0.1, 0.2, 50.0, 0.5, 4.0]]
        one_num = min(timeit.repeat(lambda: num.predict(row), number=2000, repeat=5)) / 2000
    n = args.rows
    print(f"{'measure':<44}{'tabular':>14}{'numeric':>14}{'ratio':>8}")
    print(f"{'linreg-predict CSV->CSV, rows/s':<44}{n / p_tab:>14,.0f}{n / p_num:>14,.0f}"
          f"{p_num / p_tab:>8.2f}")
    print(f"{'Predictor.predict, one row, µs':<44}{one_tab * 1e6:>14.1f}{one_num * 1e6:>14.1f}"
          f"{one_tab / one_num:>8.2f}")
    print(f"{'linreg-train --solver lstsq, s':<44}{t_tab:>14.2f}{t_num:>14.2f}"
          f"{t_tab / t_num:>8.2f}")


if __name__ == "__main__":
    main()
