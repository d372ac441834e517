"""linreg-serve's settings are one object: the CLI's options are made from its fields, and the
worker processes read the same values back from the environment."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from serve.cli import serve_main
from serve.server.settings import ServerSettings


def test_settings_survive_the_trip_to_a_worker_process():
    settings = ServerSettings(path="models/x", host="::1", port=0, grpc_port=9001, workers=3,
                              name="m", poll_seconds=2.5, max_batch_delay_us=0,
                              max_rows=7, request_timeout=0.5, threads=2,
                              allow_foreign_graph=True, quiet=True)
    env = settings.to_env()
    assert env["LINREG_SERVE_MAX_ROWS"] == "7" and env["LINREG_SERVE_THREADS"] == "2"
    assert ServerSettings.from_env(env) == settings
    assert ServerSettings.from_env({}) == ServerSettings()
    assert not settings.control and ServerSettings().control


@pytest.mark.parametrize(("key", "value"), [("PORT", "70000"), ("MAX_ROWS", "0"),
                                            ("REQUEST_TIMEOUT", "nan"), ("WORKERS", "x")])
def test_a_bad_value_in_the_environment_is_refused_by_its_type(key, value):
    with pytest.raises(click.BadParameter):
        ServerSettings.from_env({f"LINREG_SERVE_{key}": value})


def test_the_cli_options_are_the_settings_fields():
    out = CliRunner().invoke(serve_main, ["--help"], terminal_width=200).output
    text = " ".join(out.split())
    for option, default in [("--port INTEGER RANGE", "8000"), ("--max-rows", "100000"),
                            ("--max-body-bytes", "33554432"), ("--request-timeout", "30.0"),
                            ("--max-header-bytes", "65536"), ("--max-batch-rows", "4096"),
                            ("--host", "127.0.0.1"), ("--workers", "1")]:
        after = text[text.index(option):]
        assert f"[default: {default}" in after[:after.index("]") + 1], option
    for flag in ("--grpc-port", "--poll-seconds", "--allow-foreign-graph", "-q, --quiet"):
        assert flag in text
