"""config/gunicorn.conf.py as gunicorn reads it."""

import gc
import runpy
from pathlib import Path

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
