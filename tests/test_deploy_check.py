"""With production settings (DEBUG off, TLS on: the defaults), `manage.py check --deploy` reports
nothing, in a clean environment, silencing nothing."""

import ast
import re
import subprocess
import sys

import pytest

from tests.servers import PROJECT_DIR


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    """A fresh VAR_DIR with a migrated database, as `make run` leaves it (the OpenAPI schema the
    deploy check renders reads the scope catalogue)."""
    var_dir = tmp_path_factory.mktemp("deployment")
    environment = {"PATH": "/usr/bin:/bin", "HOME": str(var_dir), "VAR_DIR": str(var_dir), "LANG": "C.UTF-8"}
    manage(environment, "migrate", "--noinput", "--verbosity", "0")
    return environment


def manage(environment: dict, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *arguments],
        cwd=PROJECT_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_check_deploy_reports_nothing(deployment):
    result = manage(deployment, "check", "--deploy", "--fail-level", "DEBUG")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


def test_check_deploy_would_notice_debug(deployment):
    """The check above can fail: DEBUG on is reported."""
    result = manage({**deployment, "DEBUG": "on"}, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode != 0
    assert "security.W018" in result.stdout + result.stderr


def test_production_settings(deployment):
    names = [
        "DEBUG",
        "SESSION_COOKIE_SECURE",
        "CSRF_COOKIE_SECURE",
        "SESSION_COOKIE_HTTPONLY",
        "CSRF_COOKIE_HTTPONLY",
        "SECURE_SSL_REDIRECT",
        "SECURE_HSTS_SECONDS",
        "SECURE_HSTS_INCLUDE_SUBDOMAINS",
        "X_FRAME_OPTIONS",
        "SECURE_REFERRER_POLICY",
        "SILENCED_SYSTEM_CHECKS",
    ]
    script = f"from django.conf import settings; print([getattr(settings, name) for name in {names!r}])"
    result = manage(deployment, "shell", "--verbosity", "0", "--command", script)
    assert result.returncode == 0, result.stderr
    values = dict(zip(names, ast.literal_eval(result.stdout.strip()), strict=True))
    assert values == {
        "DEBUG": False,
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SESSION_COOKIE_HTTPONLY": True,
        "CSRF_COOKIE_HTTPONLY": True,
        "SECURE_SSL_REDIRECT": True,
        "SECURE_HSTS_SECONDS": 31_536_000,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
        "X_FRAME_OPTIONS": "DENY",
        "SECURE_REFERRER_POLICY": "same-origin",
        "SILENCED_SYSTEM_CHECKS": [],
    }


def setting_values(environment: dict, *names: str) -> list:
    script = f"from django.conf import settings; print([getattr(settings, name) for name in {names!r}])"
    result = manage(environment, "shell", "--verbosity", "0", "--command", script)
    assert result.returncode == 0, result.stderr
    return ast.literal_eval(result.stdout.strip())


@pytest.mark.parametrize("value", ["0", "false", "No", " off ", ""])
def test_debug_is_off_for_every_word_that_says_so(deployment, value):
    assert setting_values({**deployment, "DEBUG": value}, "DEBUG") == [False]


@pytest.mark.parametrize("value", ["", " , "])
def test_an_empty_allowed_hosts_is_the_default(deployment, value):
    # It was no host at all: every request a 400, /healthz and /readyz included.
    environment = {**deployment, "ISSUER": "https://auth.example.com"}
    [default] = setting_values(environment, "ALLOWED_HOSTS")
    assert default == ["127.0.0.1", "[::1]", "auth.example.com", "localhost"]
    assert setting_values({**environment, "ALLOWED_HOSTS": value}, "ALLOWED_HOSTS") == [default]
    assert setting_values({**environment, "ALLOWED_HOSTS": "a.example, b.example"}, "ALLOWED_HOSTS") == [
        ["a.example", "b.example"]
    ]


@pytest.mark.parametrize(
    ("variable", "value", "host"),
    [
        # Allowed without its brackets, which the Host header carries: every request by it a 400.
        ("ISSUER", "https://[2001:db8::1]:8443", "[2001:db8::1]:8443"),
        # Named by bootstrap's certificate, yet not allowed: every request by that address a 400.
        ("BIND", "10.0.0.5:9443", "10.0.0.5:9443"),
        ("BIND", "[2001:db8::2]:9443", "[2001:db8::2]:9443"),
    ],
)
def test_the_names_the_certificate_is_for_are_allowed_hosts(deployment, variable, value, host):
    probe = (
        "from django.test import Client; "
        f"print(Client().get('/healthz', secure=True, HTTP_HOST={host!r}).status_code)"
    )
    result = manage({**deployment, variable: value}, "shell", "--verbosity", "0", "--command", probe)
    assert result.stdout.strip() == "200", result.stderr


def test_the_readme_names_every_variable_the_configuration_reads():
    # MAX_REQUEST_BODY_BYTES, ACCESS_LOG, CSRF_TRUSTED_ORIGINS, SECURE_COOKIES and the portal's
    # timeouts were read but named nowhere an operator looks.
    readme = (PROJECT_DIR / "README.md").read_text()
    environment = readme[readme.index("## Environment") : readme.index("## Security")]
    read = set()
    for module in ["config/settings.py", "config/gunicorn.conf.py"]:
        read |= set(re.findall(r'env_\w+\(\s*"([A-Z_]+)"', (PROJECT_DIR / module).read_text()))
    assert "MAX_REQUEST_BODY_BYTES" in read
    assert sorted(name for name in read if f"`{name}`" not in environment) == []
