"""config/gunicorn.conf.py as gunicorn reads it."""

import gc
import os
import runpy
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from unittest.mock import Mock

import pytest
from cryptography.hazmat.primitives import serialization
from gunicorn.config import Config

from config import env
from config.tls import ensure_self_signed_certificate
from tests.servers import ensure_certificate

CONFIG = Path(__file__).resolve().parent.parent / "config" / "gunicorn.conf.py"


def load_config() -> dict:
    ensure_certificate()  # TLS is on (the default): the configuration wants var/tls's files
    return runpy.run_path(str(CONFIG))


def check_config(stdin=None, **environment) -> subprocess.CompletedProcess:
    return subprocess.run(
        [Path(sys.executable).with_name("gunicorn"), "-c", str(CONFIG), "--check-config"],
        env={**os.environ, "BIND": "127.0.0.1:0", **environment}, capture_output=True, text=True,
        stdin=stdin, timeout=60, check=False,
    )  # fmt: skip


def manage(*arguments, **environment) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *(arguments or ["check"])], cwd=CONFIG.parent.parent,
        env={**os.environ, **environment}, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_workers_take_what_they_loaded_out_of_the_garbage_collectors_walks_then_say_they_are_ready():
    settings = load_config()
    config = Config()
    config.set("post_worker_init", settings["post_worker_init"])  # gunicorn checks the hook's arity
    worker = SimpleNamespace(pid=4321, log=Mock())
    assert gc.get_freeze_count() == 0
    try:
        config.post_worker_init(worker=worker)
        assert gc.get_freeze_count() > 10_000  # Django, the apps, DOT and oauthlib as loaded here
    finally:
        gc.unfreeze()
    # What the tests' live servers wait for from each worker (tests/servers.py).
    worker.log.info.assert_called_once_with("Worker ready (pid: %s)", 4321)


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
        # A scheme dj_database_url knows: Django's traceback about a driver this project lacks.
        (
            "DATABASE_URL",
            "mysql://foo@db/foo",
            "Configuration error: DATABASE_URL: mysql:// is not supported",
        ),
        (
            "DATABASE_URL",
            "oracle://foo@db/foo",
            "Configuration error: DATABASE_URL: oracle:// is not supported",
        ),
        # redis-py refused every call: the server ran, and rate limits failed open on every request.
        ("REDIS_URL", "redis://127.0.0.1:63790x/0", "Configuration error: REDIS_URL: malformed"),
        (
            "REDIS_URL",
            "redis://127.0.0.1:6379/0?socket_timeout=soon",
            "Configuration error: REDIS_URL: malformed",
        ),
        (
            "REDIS_URL",
            "redis://127.0.0.1:6379/0,redis://127.0.0.1:99999/0",
            "Configuration error: REDIS_URL: malformed",
        ),
        # gunicorn listened on its own default port, 8000, while the issuer and bootstrap said 9443.
        ("BIND", "127.0.0.1", "Configuration error: BIND='127.0.0.1': expected HOST:PORT"),
        # gunicorn's traceback when it bound the socket.
        ("BIND", "127.0.0.1:99999", "Configuration error: BIND='127.0.0.1:99999': expected HOST:PORT"),
        # Served on: Django's system check, which gunicorn does not run, alone said so (manage.py).
        (
            "CSRF_TRUSTED_ORIGINS",
            "auth.example.com",
            "Configuration error: CSRF_TRUSTED_ORIGINS: 'auth.example.com' is not an origin",
        ),
        # Never equal to the browser's Origin: every form posted through a proxy was a 403.
        (
            "CSRF_TRUSTED_ORIGINS",
            "https://localhost:9443,https://auth.example.com/",
            "Configuration error: CSRF_TRUSTED_ORIGINS: 'https://auth.example.com/' is not an origin",
        ),
        # The SDK the portal calls the API with refuses them: every portal page was a 500.
        (
            "PORTAL_API_BASE_URL",
            "http://api.internal/api/v1",
            "Configuration error: PORTAL_API_BASE_URL='http://api.internal/api/v1': expected an https:// URL",
        ),
        (
            "PORTAL_TOKEN_URL",
            "token",
            "Configuration error: PORTAL_TOKEN_URL='token': expected an https:// URL",
        ),
        # The portal's reset emails (README, "Environment").
        ("EMAIL_PORT", "99999", "Configuration error: EMAIL_PORT='99999': expected 1 to 65535"),
        ("EMAIL_USE_TLS", "maybe", "Configuration error: EMAIL_USE_TLS='maybe': expected one of on/off"),
        (
            "EMAIL_HOST_PASSWORD",
            "hunter2",
            "Configuration error: EMAIL_HOST_PASSWORD is set without EMAIL_HOST_USER",
        ),
        ("DEFAULT_FROM_EMAIL", "a@b.c\nBcc: x@y.z", "Configuration error: DEFAULT_FROM_EMAIL="),
    ],
)
def test_a_bad_environment_value_stops_gunicorn_with_one_line(tmp_path, variable, value, message):
    result = check_config(VAR_DIR=str(tmp_path), TLS="off", **{variable: value})
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr


def test_a_malformed_redis_url_is_refused_without_repeating_it(tmp_path):
    # Where the host was left out, the password stands where the port goes: the message that the
    # port is no number would quote it.
    result = check_config(VAR_DIR=str(tmp_path), TLS="off", REDIS_URL="redis://foo:hunter2/0")
    assert result.returncode == 1
    assert "Configuration error: REDIS_URL: malformed" in result.stderr
    assert "hunter2" not in result.stderr


@pytest.mark.parametrize(
    ("variable", "value", "read"),
    [
        # A port that is no number or out of range: the message quoted the URL, password and all.
        ("ISSUER", "https://ops:hunter2@auth.example.com:abc", lambda: env.env_issuer("ISSUER", "")),
        (
            "PORTAL_TOKEN_URL",
            "https://ops:hunter2@auth.example.com:99999/t",
            lambda: env.env_service_url("PORTAL_TOKEN_URL", ""),
        ),
        (
            "CSRF_TRUSTED_ORIGINS",
            "https://ops:hunter2@auth.example.com:abc",
            lambda: env.env_origins("CSRF_TRUSTED_ORIGINS", []),
        ),
        ("ISSUER", "ops:hunter2@auth.example.com", lambda: env.env_issuer("ISSUER", "")),
        (
            "CSRF_TRUSTED_ORIGINS",
            "https://ops:hunter2@auth.example.com",
            lambda: env.env_origins("CSRF_TRUSTED_ORIGINS", []),
        ),
    ],
)
def test_a_url_with_a_password_is_refused_without_repeating_it(monkeypatch, variable, value, read):
    monkeypatch.setenv(variable, value)
    with pytest.raises(env.ConfigurationError) as refused:
        read()
    assert "hunter2" not in str(refused.value)
    assert str(refused.value).startswith(f"{variable}: ")


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


def test_a_var_dir_that_cannot_be_written_stops_gunicorn_and_manage_py_with_one_line(tmp_path):
    # The secret key is made there when settings load: an OSError's traceback from settings.py.
    (tmp_path / "a file").touch()
    var_dir = tmp_path / "a file" / "var"

    served = check_config(VAR_DIR=str(var_dir), TLS="off")
    managed = manage(VAR_DIR=str(var_dir))

    for result in (served, managed):
        assert result.returncode == 1
        assert (
            f"Configuration error: {var_dir / 'secret_key'}: Not a directory (VAR_DIR must be a writable "
            in (result.stderr)
        )
        assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize("tls", ["on", "off"])
def test_bootstrap_with_a_var_dir_it_cannot_write_says_so_in_one_line(tmp_path, tls):
    # With SECRET_KEY set settings load; the certificate, or the static files, were a traceback.
    (tmp_path / "static").touch()  # where collectstatic writes (TLS off: nothing is written before)
    (tmp_path / "tls").touch()
    result = manage(
        "bootstrap",
        VAR_DIR=str(tmp_path),
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",  # its own, whatever the tests use
        SECRET_KEY="x" * 50,
        TLS=tls,
        ADMIN_PASSWORD="A-long-passw0rd",
    )

    assert result.returncode == 1
    written = tmp_path / "tls" if tls == "on" else tmp_path / "static" / "staticfiles.json"
    assert result.stderr.startswith(f"CommandError: {written}: ")  # File exists, Not a directory
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("LOG_LEVEL", "loud", "LOG_LEVEL='LOUD': expected DEBUG, INFO, WARNING, ERROR or CRITICAL"),
        ("TOKEN_CACHE", "redis", "TOKEN_CACHE='redis': expected local, shared or off"),
        ("THROTTLE", "maybe", "THROTTLE='maybe': expected one of on/off"),
        ("TRUSTED_PROXY_COUNT", "one", "TRUSTED_PROXY_COUNT='one': expected a whole number"),
        ("ACCESS_TOKEN_LIFETIME", "30", "ACCESS_TOKEN_LIFETIME='30': expected 60 to 604800"),
        ("DATABASE_URL", "postgres://db:port/foo", "DATABASE_URL: "),
        # Was a traceback (Django's "Error loading MySQLdb module"), and `manage.py check` passed.
        (
            "DATABASE_URL",
            "mysql://foo:hunter2@db/foo",
            "DATABASE_URL: mysql:// is not supported; expected sqlite:/// or postgres://",
        ),
    ],
)
def test_a_value_that_cannot_work_stops_manage_py_with_one_line(tmp_path, variable, value, message):
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=CONFIG.parent.parent, capture_output=True, text=True,
        env={**os.environ, "VAR_DIR": str(tmp_path), variable: value}, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith(f"Configuration error: {message}")
    assert len(result.stderr.splitlines()) == 1
    assert "hunter2" not in result.stderr


def test_an_empty_secret_key_file_stops_manage_py_with_one_line(tmp_path):
    (tmp_path / "secret_key").write_text("")
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=CONFIG.parent.parent, capture_output=True, text=True,
        env={**os.environ, "VAR_DIR": str(tmp_path), "SECRET_KEY": ""}, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    expected = f"{tmp_path / 'secret_key'} is empty: delete it (a new key is made) or set SECRET_KEY"
    assert result.stderr == f"Configuration error: {expected}\n"


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


def other_key(tmp_path) -> bytes:
    """The key of another self-signed certificate."""
    ensure_self_signed_certificate(tmp_path / "other.pem", tmp_path / "other-key.pem", ["localhost"])
    return (tmp_path / "other-key.pem").read_bytes()


def encrypted(key: bytes) -> bytes:
    private_key = serialization.load_pem_private_key(key, password=None)
    return private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"a passphrase"),
    )


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        (other_key, "KEY_VALUES_MISMATCH"),
        (lambda tmp_path: b"not a key", "PEM lib"),
        (lambda tmp_path: encrypted((tmp_path / "tls" / "key.pem").read_bytes()), "PEM lib"),
    ],
    ids=["another certificate's", "no key", "encrypted"],
)
def test_a_tls_key_that_cannot_serve_stops_gunicorn_with_one_line(tmp_path, key, reason):
    # gunicorn said "Listening at: https://..." and then dropped every connection, a warning each.
    cert_path, key_path = tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "key.pem"
    ensure_self_signed_certificate(cert_path, key_path, ["localhost"])
    key_path.write_bytes(key(tmp_path))

    result = check_config(VAR_DIR=str(tmp_path), stdin=subprocess.DEVNULL)

    assert result.returncode == 1
    assert f"Configuration error: TLS: {cert_path} with {key_path} cannot serve (" in result.stderr
    assert reason in result.stderr and len(result.stderr.splitlines()) == 1
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("bind", "served"),
    [
        ("127.0.0.1:8443", "127.0.0.1:8443"),
        ("tcp://127.0.0.1:8443", "127.0.0.1:8443"),  # gunicorn's prefix, taken off for the issuer's port
        ("[::1]:8443", "[::1]:8443"),
        (":8443", ":8443"),
        ("unix:/run/foo.sock", "unix:/run/foo.sock"),
        ("fd://3", "fd://3"),
    ],
)
def test_bind_takes_each_address_gunicorn_serves_with_a_port(monkeypatch, bind, served):
    monkeypatch.setenv("BIND", bind)
    assert load_config()["bind"] == [served]


@pytest.mark.parametrize("bind", [None, ""])
def test_an_empty_bind_is_the_default_address(monkeypatch, bind):
    # An empty BIND (`BIND=` in an env file) listened on gunicorn's 0.0.0.0:8000; the issuer said 9443.
    if bind is None:
        monkeypatch.delenv("BIND", raising=False)
    else:
        monkeypatch.setenv("BIND", bind)
    assert load_config()["bind"] == ["0.0.0.0:9443"]
