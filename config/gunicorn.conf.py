"""gunicorn settings for `make run` (and the benchmark), from the environment (README)."""

import gc
import ssl
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from config.env import ConfigurationError, env_bind, env_bool

try:
    from config.settings import TLS, TLS_CERT_FILE, TLS_KEY_FILE, WEB_CONCURRENCY

    access_log = env_bool("ACCESS_LOG", True)
    # The address settings' issuer follows; empty counts as unset (gunicorn would bind 0.0.0.0:8000).
    bind = [env_bind("BIND")]
    # gunicorn would start, then stop with a traceback when it opens its listening socket.
    missing = [path for path in (TLS_CERT_FILE, TLS_KEY_FILE) if not path.is_file()]
    if TLS and missing:
        raise ConfigurationError(
            f"TLS is on but {missing[0]} does not exist: run manage.py bootstrap, or set TLS=off"
        )
    if TLS:
        # gunicorn loads them for each connection, in the worker: a key that does not match the
        # certificate, or cannot be read, was "Listening at: https://..." and then every
        # connection dropped, a warning line each. An empty password: a key protected by one
        # fails here rather than prompting on the terminal.
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                TLS_CERT_FILE, TLS_KEY_FILE, password=b""
            )
        except OSError as error:  # ssl.SSLError too: its reason says why ("KEY_VALUES_MISMATCH")
            reason = getattr(error, "reason", None) or error.strerror or error.__class__.__name__
            raise ConfigurationError(
                f"TLS: {TLS_CERT_FILE} with {TLS_KEY_FILE} cannot serve ({reason}): the key must be the "
                "certificate's, unencrypted and readable (delete both and run manage.py bootstrap for a "
                "self-signed pair)"
            ) from None
except ConfigurationError as error:  # one line and exit 1, not gunicorn's traceback
    sys.exit(f"Configuration error: {error}")

workers = WEB_CONCURRENCY
wsgi_app = "config.wsgi:application"
# gunicorn's sync worker, with its own refusals (malformed HTTP) answered as JSON errors.
worker_class = "config.workers.SyncWorker"
# Every instance is independent: no shared control socket under ~/.gunicorn.
control_socket_disable = True
timeout = 30
graceful_timeout = 10
keepalive = 5
max_requests = 0
limit_request_line = 8190
limit_request_fields = 100

if TLS:
    certfile = str(TLS_CERT_FILE)
    keyfile = str(TLS_KEY_FILE)

# The request path without its query string: a token or secret sent in a URL never reaches a log.
accesslog = "-" if access_log else None
access_log_format = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(M)sms'
errorlog = "-"
# The same path with a password reset link's token masked (config/workers.py).
logger_class = "config.workers.AccessLogger"


def post_worker_init(worker):
    """Once the worker has loaded the site (Django, the apps, DOT, oauthlib: some 100,000 objects
    that live as long as the worker), take those out of the cyclic garbage collector's walks. Its
    full collection otherwise visits every one of them, a pause of 60-80 ms for the request that
    sets it off, about once in 25,000 requests (docs/benchmarks.md, seventeenth round).

    Then say so: "Booting worker" is logged before the site is loaded, and a worker still loading
    it takes no connection (the tests' live servers wait for this line from each worker)."""
    gc.freeze()
    worker.log.info("Worker ready (pid: %s)", worker.pid)
