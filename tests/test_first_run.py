"""A new user on a fresh machine: `make run` bootstraps once, `create_client`, then the seed's curl.

These start real processes (manage.py, make, gunicorn, curl) with a fresh var/ directory.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from django.db import connection

from tests.servers import PROJECT_DIR, port_is_free, server_environment

pytestmark = pytest.mark.live
PYTHON = sys.executable


def manage(environment: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, "manage.py", *args],
        cwd=PROJECT_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def fresh_environment(tmp_path, transactional_db) -> dict:
    """A new var/ directory (no key, no certificate) on the test database."""
    environment = server_environment(VAR_DIR=tmp_path / "var")
    for name in ("SECRET_KEY", "DEBUG", "ADMIN_PASSWORD", "TLS", "BIND", "ISSUER", "WEB_CONCURRENCY"):
        environment.pop(name, None)
    return environment


def test_bootstrap_sets_up_once_and_then_changes_nothing(fresh_environment, tmp_path):
    first = manage(fresh_environment, "bootstrap")
    assert first.returncode == 0, first.stderr
    assert "password:" in first.stdout  # the generated admin password, printed this once

    var = tmp_path / "var"
    key_file = var / "secret_key"
    assert len(key_file.read_text()) >= 50
    assert key_file.stat().st_mode & 0o077 == 0
    assert (var / "tls" / "key.pem").stat().st_mode & 0o077 == 0
    certificate = x509.load_pem_x509_certificate((var / "tls" / "cert.pem").read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert "127.0.0.1" in {str(address) for address in names.get_values_for_type(x509.IPAddress)}

    cert_before, key_before = (var / "tls" / "cert.pem").read_bytes(), key_file.read_text()
    second = manage(fresh_environment, "bootstrap")
    assert second.returncode == 0, second.stderr
    assert "password" not in second.stdout
    assert (var / "tls" / "cert.pem").read_bytes() == cert_before
    assert key_file.read_text() == key_before

    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM authserver_scope ORDER BY name")
        assert [row[0] for row in cursor.fetchall()] == [
            "introspection", "orders:read", "orders:write", "products:read", "registration",
        ]  # fmt: skip


def test_admin_password_can_be_given(fresh_environment):
    fresh_environment["ADMIN_PASSWORD"] = "correct horse battery staple"
    result = manage(fresh_environment, "bootstrap")
    assert result.returncode == 0, result.stderr
    assert "correct horse" not in result.stdout
    from django.contrib.auth.models import User

    assert User.objects.get(username="admin").check_password("correct horse battery staple")


def test_debug_is_off_unless_set(fresh_environment):
    show = "from django.conf import settings; print(settings.DEBUG)"
    assert manage(fresh_environment, "shell", "-c", show).stdout.strip().splitlines()[-1] == "False"
    assert (
        manage({**fresh_environment, "DEBUG": "on"}, "shell", "-c", show).stdout.strip().splitlines()[-1]
        == "True"
    )


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("DEBUG", "maybe", "DEBUG='maybe': expected one of on/off"),
        ("ACCESS_TOKEN_LIFETIME", "abc", "ACCESS_TOKEN_LIFETIME='abc': expected a whole number"),
        # Tokens answered already expired; a sandbox client could not be registered (a 500).
        ("ACCESS_TOKEN_LIFETIME", "-5", "ACCESS_TOKEN_LIFETIME='-5': expected 60 to 604800"),
        ("SANDBOX_TOKEN_LIFETIME", "30", "SANDBOX_TOKEN_LIFETIME='30': expected 60 to 604800"),
        ("SANDBOX_TOKEN_LIFETIME", "1209600", "SANDBOX_TOKEN_LIFETIME='1209600': expected 60 to 604800"),
        ("THROTTLE_TOKEN_REQUESTS_PER_MINUTE", "0", "expected 1 or more"),
        ("LOG_LEVEL", "LOUD", "LOG_LEVEL='LOUD': expected DEBUG, INFO"),
        ("TOKEN_CACHE", "bogus", "TOKEN_CACHE='bogus': expected local, shared or off"),
        ("DATABASE_URL", "foo", "DATABASE_URL: "),
    ],
)
def test_a_bad_environment_value_is_one_clear_line_and_exit_1(fresh_environment, variable, value, message):
    result = manage({**fresh_environment, variable: value}, "bootstrap")
    assert result.returncode == 1
    assert result.stderr.startswith("Configuration error: ") and message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize("command", [["bootstrap"], ["create_client", "--name", "x"]])
def test_a_file_that_is_no_database_is_one_clear_line(fresh_environment, tmp_path, command):
    """A corrupt or wrong DATABASE_URL file: it was a traceback ending in DatabaseError."""
    garbage = tmp_path / "not-a-database.sqlite3"
    garbage.write_text("garbage " * 1000)
    result = manage({**fresh_environment, "DATABASE_URL": f"sqlite:///{garbage}"}, *command)
    assert result.returncode == 1
    assert "Database error: file is not a database" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_empty_secret_key_file_is_refused_not_served(fresh_environment, tmp_path):
    """Django refuses an empty SECRET_KEY on first use: every request, /healthz included, was a 500
    while bootstrap said Ready."""
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "secret_key").write_text("")
    result = manage(fresh_environment, "bootstrap")
    assert result.returncode == 1
    assert "secret_key is empty: delete it (a new key is made) or set SECRET_KEY" in result.stderr
    assert "Traceback" not in result.stderr


def test_session_and_csrf_cookies_are_secure_over_tls_even_in_debug(fresh_environment):
    show = (
        "from django.conf import settings; print(settings.SESSION_COOKIE_SECURE, settings.CSRF_COOKIE_SECURE)"
    )

    def secure(**environment) -> str:
        return (
            manage({**fresh_environment, **environment}, "shell", "-c", show).stdout.strip().splitlines()[-1]
        )

    assert secure() == "True True"
    assert secure(DEBUG="on") == "True True"  # make run's https://localhost:9443, DEBUG or not
    assert secure(TLS="off") == "True True"  # production behind a TLS-terminating proxy
    assert secure(DEBUG="on", TLS="off") == "False False"  # plain http://localhost in development


def test_the_issuer_follows_the_port_chosen_with_bind(fresh_environment):
    """9443 busy, `BIND=127.0.0.1:8443 make run`: the printed console URL, the metadata, the
    portal's calls and the SDK's credentials must name the port the server listens on."""
    show = "from django.conf import settings; print(settings.ISSUER)"

    def issuer(**environment) -> str:
        return (
            manage({**fresh_environment, **environment}, "shell", "-c", show).stdout.strip().splitlines()[-1]
        )

    assert issuer() == "https://localhost:9443"
    assert issuer(BIND="127.0.0.1:8443") == "https://localhost:8443"
    assert issuer(BIND="[::1]:8444") == "https://localhost:8444"
    assert issuer(BIND="0.0.0.0:443") == "https://localhost"
    assert issuer(BIND="127.0.0.1:8443", ISSUER="https://auth.example.com/") == "https://auth.example.com"

    result = manage({**fresh_environment, "BIND": "127.0.0.1:8443"}, "bootstrap")
    assert result.returncode == 0, result.stderr
    assert "Admin console: https://localhost:8443/admin/" in result.stdout


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_make_run_then_create_client_then_the_seed_curl(fresh_environment):
    if not port_is_free(9443):
        pytest.skip(
            "port 9443 is in use (another `make run`?); this test runs the seed's exact command on it"
        )
    environment = {**fresh_environment, "WEB_CONCURRENCY": "2", "ACCESS_LOG": "off"}
    make_run = subprocess.Popen(
        ["make", "run"], cwd=PROJECT_DIR, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        wait_for_https(9443, make_run)
        created = manage(environment, "create_client", "--name", "seed", "--json")
        assert created.returncode == 0, created.stderr
        credentials = json.loads(created.stdout)

        user = f"{credentials['client_id']}:{credentials['client_secret']}"
        seed_command = (
            f'curl --user {user} -k -d "grant_type=client_credentials" '
            '-H "Content-Type: application/x-www-form-urlencoded" https://localhost:9443/oauth2/token'
        )
        result = subprocess.run(seed_command, shell=True, capture_output=True, text=True, timeout=30)  # noqa: S602

        token = json.loads(result.stdout)
        assert token["token_type"] == "Bearer"
        assert token["scope"] == "orders:read products:read"
        assert token["access_token"]
    finally:
        os.killpg(make_run.pid, signal.SIGTERM)
        output = make_run.communicate(timeout=20)[0].decode()
    assert "Admin console" in output and "password:" in output


def wait_for_https(port: int, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(process.stdout.read().decode())
        probe = subprocess.run(
            ["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", f"https://localhost:{port}/healthz"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if probe.stdout == "200":
            return
        time.sleep(0.5)
    raise RuntimeError("make run did not serve https://localhost:9443 in time")


def test_sqlite_runs_in_wal_mode_with_immediate_transactions(db):
    if connection.vendor != "sqlite":
        pytest.skip("SQLite only")
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        assert cursor.fetchone()[0] == "wal"
    assert connection.transaction_mode == "IMMEDIATE"


def test_a_second_run_reuses_the_installed_environment():
    """`make run` installs into .venv only when pyproject.toml changed (a marker file)."""
    marker = Path(PROJECT_DIR, ".venv", ".installed")
    if not marker.exists() or marker.stat().st_mtime < Path(PROJECT_DIR, "pyproject.toml").stat().st_mtime:
        pytest.skip("the environment was not installed by make (run this through `make test`)")
    dry_run = subprocess.run(
        ["make", "-n", "run"], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=30, check=True
    )
    assert "pip install" not in dry_run.stdout
    assert "manage.py bootstrap" in dry_run.stdout
    assert "gunicorn" in dry_run.stdout
