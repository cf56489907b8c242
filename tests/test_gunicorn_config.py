"""config/gunicorn.conf.py as gunicorn reads it."""

import gc
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
from gunicorn.config import Config

CONFIG = Path(__file__).resolve().parent.parent / "config" / "gunicorn.conf.py"


def test_workers_take_what_they_loaded_out_of_the_garbage_collectors_walks():
    settings = runpy.run_path(str(CONFIG))
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
        ("DEBUG", "maybe", "Configuration error: DEBUG='maybe': expected one of on/off"),
    ],
)
def test_a_bad_environment_value_stops_gunicorn_with_one_line(tmp_path, variable, value, message):
    environment = {**os.environ, "VAR_DIR": str(tmp_path), "BIND": "127.0.0.1:0", variable: value}
    result = subprocess.run(
        [Path(sys.executable).with_name("gunicorn"), "-c", str(CONFIG), "--check-config"],
        env=environment, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr
