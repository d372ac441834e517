"""Where ``linreg-predict`` runs a folder's parts: here (``local``), on Dask or on Spark.

Each engine gets the parts' jobs (input part, output file, options) and returns the rows each
part had. A job runs :func:`serve.batch.files.predict_file` on a worker, so a part is read, checked and
written exactly as the local engine does it (the same readers, the same one-line errors naming the
part, its row and column), with the model sent as bytes and opened once per worker process
(:mod:`serve.batch.workers`). The output folder must be visible to the workers: on one machine it is;
on a cluster, give paths on a shared filesystem.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from serve.batch.files import Job, Predicted
from serve.batch.workers import ModelPayload, predict_part
from serve.core.errors import DataError, LinregError

Engine = Callable[[list[Job]], list[int]]


def dask_engine(model: str | os.PathLike, *, scheduler: str | None = None,
                workers: int | None = None, allow_foreign_graph: bool = False) -> Engine:
    """Dask: join the cluster at ``scheduler``, or start a LocalCluster of ``workers``
    single-threaded worker processes (default 2). Each part is one task; the model is scattered
    to every worker once."""
    def run(jobs: list[Job]) -> list[int]:
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise LinregError("--engine dask needs the dask extra: pip install "
                              "'linreg[dask]'") from None
        cluster = None
        if scheduler is None:
            cluster = LocalCluster(n_workers=workers or 2, threads_per_worker=1, processes=True,
                                   dashboard_address=None, silence_logs=logging.CRITICAL,
                                   # no dashboard; its HTTP endpoint on a free loopback port
                                   # (8787 may be taken: distributed would warn)
                                   scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})
        try:
            try:
                client = Client(cluster or scheduler, timeout=30)
            except OSError as e:
                raise LinregError(f"--scheduler {scheduler}: cannot reach it ({e})") from None
            with client:
                payload = ModelPayload.of(model, threads=None,
                                          processes=_processes_per_host(client),
                                          allow_foreign_graph=allow_foreign_graph)
                [remote] = client.scatter([payload], broadcast=True)
                # Keys name results: unique per job, so two jobs on one cluster never share one.
                run_id = uuid.uuid4().hex[:12]
                futures = [client.submit(predict_part, remote, part, target, options,
                                         pure=False, key=f"linreg-{run_id}-part-{i}")
                           for i, (part, target, options) in enumerate(_absolute(jobs))]
                try:
                    return client.gather(futures)
                except BaseException:
                    client.cancel(futures)
                    raise
        finally:
            if cluster is not None:
                cluster.close()
    return run


def _processes_per_host(client: Any) -> int:
    """The most Dask worker processes one machine of the cluster runs (they share its cores)."""
    hosts = Counter(urlsplit(w).hostname for w in client.scheduler_info()["workers"])
    return max(hosts.values(), default=1)


def _absolute(jobs: list[Job]) -> list[Job]:
    """The jobs with absolute paths: a worker resolves a relative one in its own working
    folder (a Spark executor's ``work/app-*/N``), not the driver's."""
    return [(os.path.abspath(part), os.path.abspath(target), options)
            for part, target, options in jobs]


# ------------------------------------------------------------------ Spark

_ERROR_MARK = "LINREG-ERROR: "
_CORES_WORTH = 1 << 16  # "as many processes as cores": fair_threads gives each one thread


def spark_session(master: str = "local[*]", app: str = "linreg"):
    """A SparkSession at ``master`` (or the one spark-submit made), quiet: Spark's own log goes
    to errors only, so the command's stderr stays one line per problem."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise LinregError("--engine spark needs the spark extra: pip install "
                          "'linreg[spark]' (and a Java runtime)") from None
    import sys
    import warnings

    # Spark's own log: errors only (a log4j2.properties in a conf folder of our own), and the
    # Python workers run this interpreter (it has pyarrow, onnxruntime and linreg).
    conf = Path(tempfile.gettempdir()) / f"linreg-spark-conf-{os.getuid()}"
    conf.mkdir(exist_ok=True)
    (conf / "log4j2.properties").write_text(
        "rootLogger.level = error\nrootLogger.appenderRef.stderr.ref = console\n"
        "appender.console.type = Console\nappender.console.name = console\n"
        "appender.console.target = SYSTEM_ERR\nappender.console.layout.type = PatternLayout\n"
        "appender.console.layout.pattern = %m%n\nlogger.python.name = "
        "org.apache.spark.api.python\nlogger.python.level = off\nlogger.task.name = "
        "org.apache.spark.scheduler.TaskSetManager\nlogger.task.level = off\n"
        "logger.executor.name = org.apache.spark.executor.Executor\n"
        "logger.executor.level = off\n")
    os.environ.setdefault("SPARK_CONF_DIR", str(conf))
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"pyspark\..*")
    builder = SparkSession.builder.appName(app).config("spark.ui.enabled", "false") \
        .config("spark.ui.showConsoleProgress", "false")
    if "PYSPARK_GATEWAY_PORT" not in os.environ:  # not under spark-submit: its master rules
        builder = builder.master(master)
    # The JVM writes its start-up chatter to the stderr it inherits: give it /dev/null (its
    # errors reach us as Python exceptions, said in one line).
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        session = builder.getOrCreate()
    except Exception as e:  # no Java, a bad master URL
        raise LinregError(f"cannot start Spark at {master}: {str(e).splitlines()[0]}") from None
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    session.sparkContext.setLogLevel("ERROR")
    return session


def spark_engine(model: str | os.PathLike, *, master: str = "local[*]",
                 allow_foreign_graph: bool = False) -> Engine:
    """Spark: the jobs become a DataFrame (one row per part, one partition each) mapped with
    ``mapInArrow``: Arrow in (the job), Arrow out (its row count), no pandas step."""
    def run(jobs: list[Job]) -> list[int]:
        import json

        import pyarrow as pa

        spark = spark_session(master, "linreg-predict")
        # Spark runs one task per core of an executor: one onnxruntime thread each (sized on
        # the executor's machine, whatever the driver's).
        payload = ModelPayload.of(model, threads=None, processes=_CORES_WORTH,
                                  allow_foreign_graph=allow_foreign_graph)
        shared = spark.sparkContext.broadcast(payload)
        rows = [(i, part, target, json.dumps(options))
                for i, (part, target, options) in enumerate(_absolute(jobs))]
        frame = spark.createDataFrame(rows, "i long, part string, target string, options string")

        def run_parts(batches):
            for batch in batches:
                counts = []
                for i, part, target, options in zip(*(c.to_pylist() for c in batch.columns)):
                    try:
                        n = predict_part(shared.value, part, target, json.loads(options))
                    except LinregError as e:  # one line the driver finds in Spark's report
                        raise RuntimeError(f"{_ERROR_MARK}{e}") from None
                    counts.append((i, int(n), n.unpredictable))
                yield pa.RecordBatch.from_arrays(
                    [pa.array([c[k] for c in counts], pa.int64()) for k in range(3)],
                    names=["i", "rows", "unpredictable"])

        try:
            out = frame.repartition(len(jobs)).mapInArrow(
                run_parts, "i long, rows long, unpredictable long").collect()
        except Exception as e:
            found = re.findall(re.escape(_ERROR_MARK) + r"(.*)", str(e))
            if found:
                raise DataError(found[-1].strip()) from None
            raise LinregError(f"the Spark job failed: {str(e).splitlines()[0]}") from None
        by_job = {r["i"]: Predicted(r["rows"], r["unpredictable"]) for r in out}
        return [by_job[i] for i in range(len(jobs))]
    return run
