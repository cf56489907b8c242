"""config/gunicorn.conf.py as gunicorn reads it."""

import gc
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
from gunicorn.config import Config

from tests.servers import ensure_certificate

CONFIG = Path(__file__).resolve().parent.parent / "config" / "gunicorn.conf.py"


def load_config() -> dict:
    ensure_certificate()  # TLS is on (the default): the configuration wants var/tls's files
    return runpy.run_path(str(CONFIG))


def check_config(**environment) -> subprocess.CompletedProcess:
    return subprocess.run(
        [Path(sys.executable).with_name("gunicorn"), "-c", str(CONFIG), "--check-config"],
        env={**os.environ, "BIND": "127.0.0.1:0", **environment}, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip


def test_workers_take_what_they_loaded_out_of_the_garbage_collectors_walks():
    settings = load_config()
    config = Config()
    config.set("post_worker_init", settings["post_worker_init"])  # gunicorn checks the hook's arity
    assert gc.get_freeze_count() == 0
    try:
        config.post_worker_init(worker=None)
        assert gc.get_freeze_count() > 10_000  # Django, the apps, DOT and oauthlib as loaded here
    finally:
        gc.unfreeze()


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        # gunicorn listened with no worker: every request hung.
        ("WEB_CONCURRENCY", "0", "Configuration error: WEB_CONCURRENCY='0': expected 1 or more"),
        # gunicorn forked 100000 workers (16 per core is the most).
        (
            "WEB_CONCURRENCY",
            "100000",
            f"Configuration error: WEB_CONCURRENCY='100000': expected at most {16 * (os.cpu_count() or 1)} ",
        ),
        ("DEBUG", "maybe", "Configuration error: DEBUG='maybe': expected one of on/off"),
        # Read after the try that turns a bad value into one line: it was a traceback.
        ("ACCESS_LOG", "maybe", "Configuration error: ACCESS_LOG='maybe': expected one of on/off"),
    ],
)
def test_a_bad_environment_value_stops_gunicorn_with_one_line(tmp_path, variable, value, message):
    result = check_config(VAR_DIR=str(tmp_path), TLS="off", **{variable: value})
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("value", ["abc", "0", "", str(16 * (os.cpu_count() or 1) + 1)])
def test_a_bad_web_concurrency_stops_bootstrap_before_gunicorn_starts(tmp_path, value):
    # gunicorn reads WEB_CONCURRENCY itself before its config file, when it is imported (gunicorn/
    # config.py, `Workers.default`): "abc" was its traceback, and so was "", which bootstrap took
    # as unset and let `make run` go on to gunicorn.
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=CONFIG.parent.parent, capture_output=True, text=True,
        env={**os.environ, "VAR_DIR": str(tmp_path), "WEB_CONCURRENCY": value}, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith(f"Configuration error: WEB_CONCURRENCY='{value}': expected ")
    assert len(result.stderr.splitlines()) == 1


def test_sixteen_workers_per_core_are_still_taken(tmp_path):
    most = 16 * (os.cpu_count() or 1)
    result = check_config(VAR_DIR=str(tmp_path), TLS="off", WEB_CONCURRENCY=str(most))
    assert result.returncode == 0, result.stderr


def test_tls_without_a_certificate_stops_gunicorn_with_one_line(tmp_path):
    # gunicorn started, then stopped with a traceback when it opened its socket.
    result = check_config(VAR_DIR=str(tmp_path))
    assert result.returncode == 1
    assert (
        f"Configuration error: TLS is on but {tmp_path / 'tls' / 'cert.pem'} does not exist" in result.stderr
    )
    assert "Traceback" not in result.stderr
    assert check_config(VAR_DIR=str(tmp_path), TLS="off").returncode == 0


@pytest.mark.parametrize("bind", [None, ""])
def test_an_empty_bind_is_the_default_address(monkeypatch, bind):
    # An empty BIND (`BIND=` in an env file) listened on gunicorn's 0.0.0.0:8000; the issuer said 9443.
    if bind is None:
        monkeypatch.delenv("BIND", raising=False)
    else:
        monkeypatch.setenv("BIND", bind)
    assert load_config()["bind"] == ["0.0.0.0:9443"]
