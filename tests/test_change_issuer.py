"""An operator sets ISSUER (and BIND): a value that cannot be an issuer stops manage.py and gunicorn
with one line; bootstrap's own certificate follows the issuer's host, an operator's is left alone."""

import datetime
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from config.env import LOOPBACK_HOSTS, ConfigurationError, bind_host, env_issuer, env_origins, env_service_url
from config.tls import ensure_self_signed_certificate, hosts_not_named, made_by_bootstrap
from sdkportal.sdk.foo_sdk import client as foo_sdk_client
from tests.servers import PROJECT_DIR

CONFIG = PROJECT_DIR / "config" / "gunicorn.conf.py"
LOOPBACK = ["localhost", "127.0.0.1", "::1"]


def clean_environment(var_dir: Path, **overrides) -> dict:
    """A fresh deployment: its own VAR_DIR and SQLite file, none of the test run's settings."""
    environment = {"PATH": "/usr/bin:/bin", "HOME": str(var_dir), "LANG": "C.UTF-8", "VAR_DIR": str(var_dir)}
    return {**environment, "DATABASE_URL": f"sqlite:///{var_dir / 'db.sqlite3'}", **overrides}


def manage(environment: dict, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *arguments], cwd=PROJECT_DIR, env=environment, capture_output=True,
        text=True, timeout=120, check=False,
    )  # fmt: skip


# --- ISSUER: RFC 8414 2, an https URL without query or fragment (and here without a path) --------


@pytest.mark.parametrize(
    ("issuer", "message"),
    [
        # Was published as is: tokens and secrets sent in the clear to a host on the network.
        ("http://auth.example.com", "expected https:// (http:// only on a loopback host"),
        ("http://10.0.0.5:9443", "expected https:// (http:// only on a loopback host"),
        # The metadata is at the root: <issuer>/.well-known/... would be a path nobody serves.
        ("https://auth.example.com/tenant", "expected no path (the metadata is served at the root"),
        ("https://auth.example.com/tenant/", "expected no path"),
        ("https://auth.example.com//", "expected no path"),
        ("https://auth.example.com?tenant=1", "expected no query or fragment (RFC 8414 2)"),
        ("https://auth.example.com?", "expected no query or fragment"),
        ("https://auth.example.com#top", "expected no query or fragment"),
        # Was accepted here and caught only by Django's system check on CSRF_TRUSTED_ORIGINS.
        ("notaurl", "expected an https:// URL such as https://auth.example.com"),
        ("auth.example.com", "expected an https:// URL"),
        ("ftp://auth.example.com", "expected an https:// URL"),
        ("https://", "expected an https:// URL"),
        ("https://auth.example.com:99999", "expected an https:// URL"),
        ("https://auth.example.com:port", "expected an https:// URL"),
        ("https://[::1", "expected an https:// URL"),
        # Loopback, but not to the SDK: the credentials the portal hands out would not work.
        ("http://127.0.0.2:8123", "expected https:// (http:// only on a loopback host"),
        (" https://auth.example.com", "expected an https:// URL"),
    ],
)
def test_an_issuer_that_cannot_be_one_is_refused(monkeypatch, issuer, message):
    monkeypatch.setenv("ISSUER", issuer)
    with pytest.raises(ConfigurationError) as refused:
        env_issuer("ISSUER", "0.0.0.0:9443")
    assert str(refused.value).startswith(f"ISSUER={issuer!r}: ")
    assert message in str(refused.value)


def test_an_issuer_with_a_password_is_refused_without_repeating_it(monkeypatch):
    monkeypatch.setenv("ISSUER", "https://user:hunter2@auth.example.com")
    with pytest.raises(ConfigurationError, match="expected no user name or password") as refused:
        env_issuer("ISSUER", "0.0.0.0:9443")
    assert "hunter2" not in str(refused.value)


@pytest.mark.parametrize(
    ("issuer", "expected"),
    [
        ("https://auth.example.com", "https://auth.example.com"),
        ("https://auth.example.com/", "https://auth.example.com"),  # a lone trailing "/" is dropped
        ("https://auth.example.com:8443", "https://auth.example.com:8443"),
        ("https://[2001:db8::1]:8443", "https://[2001:db8::1]:8443"),
        # Plain HTTP that never leaves the machine: the benchmark, the tests' and soak's TLS=off servers.
        ("http://127.0.0.1:8123", "http://127.0.0.1:8123"),
        ("http://localhost:8123", "http://localhost:8123"),
        ("http://[::1]:8123", "http://[::1]:8123"),
        ("", "https://localhost:8443"),  # unset or empty: https://localhost on BIND's port
    ],
)
def test_an_issuer_that_can_be_one_is_taken(monkeypatch, issuer, expected):
    monkeypatch.setenv("ISSUER", issuer)
    assert env_issuer("ISSUER", "127.0.0.1:8443") == expected


def test_http_is_taken_on_the_loopback_hosts_the_sdk_takes_it_on():
    assert LOOPBACK_HOSTS == foo_sdk_client.LOOPBACK_HOSTS


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.internal/api/v1/", "https://api.internal/api/v1"),
        ("http://127.0.0.1:8000/api/v1", "http://127.0.0.1:8000/api/v1"),  # TLS=off behind a proxy
        ("http://[::1]:8000/oauth2/token", "http://[::1]:8000/oauth2/token"),
        ("", "https://localhost:8443/api/v1"),  # unset or empty: under the issuer
    ],
)
def test_a_portal_url_the_sdk_can_call_is_taken(monkeypatch, url, expected):
    monkeypatch.setenv("PORTAL_API_BASE_URL", url)
    assert env_service_url("PORTAL_API_BASE_URL", "https://localhost:8443/api/v1") == expected
    # The SDK the portal calls the API with takes it as it is.
    foo_sdk_client._check_url("api_base_url", expected)


@pytest.mark.parametrize("url", ["api.internal", "http://api.internal/api/v1", "https://", "https://x:port/"])
def test_a_portal_url_the_sdk_would_refuse_is_refused(monkeypatch, url):
    monkeypatch.setenv("PORTAL_TOKEN_URL", url)
    with pytest.raises(ConfigurationError) as refused:
        env_service_url("PORTAL_TOKEN_URL", "https://localhost:8443/oauth2/token")
    assert str(refused.value).startswith(f"PORTAL_TOKEN_URL={url!r}: expected an https:// URL")


def test_a_portal_url_with_a_password_is_refused_without_repeating_it(monkeypatch):
    monkeypatch.setenv("PORTAL_TOKEN_URL", "https://portal:hunter2@auth.internal/oauth2/token")
    with pytest.raises(ConfigurationError) as refused:
        env_service_url("PORTAL_TOKEN_URL", "https://localhost:8443/oauth2/token")
    assert "hunter2" not in str(refused.value)


def test_trusted_origins_take_origins_and_refuse_anything_else(monkeypatch):
    monkeypatch.setenv(
        "CSRF_TRUSTED_ORIGINS", " HTTPS://Auth.Example.com, https://*.example.org:8443,http://[::1]:8000"
    )
    # In lowercase: Django compares each as it is with the browser's Origin.
    assert env_origins("CSRF_TRUSTED_ORIGINS", []) == [
        "https://auth.example.com",
        "https://*.example.org:8443",
        "http://[::1]:8000",
    ]
    for origin in [
        "auth.example.com",
        "https://auth.example.com/",
        "https://auth.example.com/admin",
        "ftp://x",
    ]:
        monkeypatch.setenv("CSRF_TRUSTED_ORIGINS", f"https://localhost:9443,{origin}")
        with pytest.raises(
            ConfigurationError, match=f"^CSRF_TRUSTED_ORIGINS: '{re.escape(origin)}' is not an"
        ):
            env_origins("CSRF_TRUSTED_ORIGINS", [])


def test_a_bad_issuer_stops_manage_py_and_gunicorn_with_one_line(tmp_path):
    environment = clean_environment(tmp_path, ISSUER="http://auth.example.com", TLS="off")
    expected = "Configuration error: ISSUER='http://auth.example.com': expected https://"

    command = manage(environment, "check")
    assert command.returncode == 1
    assert command.stderr.startswith(expected) and len(command.stderr.splitlines()) == 1

    gunicorn = subprocess.run(
        [Path(sys.executable).with_name("gunicorn"), "-c", str(CONFIG), "--check-config"],
        env={**environment, "BIND": "127.0.0.1:0"}, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert gunicorn.returncode == 1
    assert expected in gunicorn.stderr and "Traceback" not in gunicorn.stderr


# --- The certificate under var/tls follows the issuer's host, if bootstrap made it ---------------


def operators_certificate(cert_path: Path, key_path: Path, host: str) -> None:
    """A self-signed certificate as an operator makes one (openssl req -x509), not bootstrap."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


def test_bootstraps_own_certificate_is_made_again_for_a_host_it_does_not_name(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    assert ensure_self_signed_certificate(cert, key, LOOPBACK) == "created"
    assert made_by_bootstrap(cert)
    assert ensure_self_signed_certificate(cert, key, LOOPBACK) is None  # names them all: kept

    first = cert.read_bytes()
    assert ensure_self_signed_certificate(cert, key, [*LOOPBACK, "auth.example.com"]) == "remade"
    assert cert.read_bytes() != first
    assert hosts_not_named(cert, [*LOOPBACK, "auth.example.com"]) == []
    assert key.stat().st_mode & 0o077 == 0


def test_an_operators_certificate_is_never_replaced(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    operators_certificate(cert, key, "old.example.com")  # self-signed too, but not bootstrap's
    before = cert.read_bytes(), key.read_bytes()
    assert not made_by_bootstrap(cert)
    assert ensure_self_signed_certificate(cert, key, [*LOOPBACK, "auth.example.com"]) is None
    assert (cert.read_bytes(), key.read_bytes()) == before
    assert hosts_not_named(cert, ["auth.example.com", "old.example.com"]) == ["auth.example.com"]


def test_a_wildcard_names_one_label_under_it(tmp_path):
    operators_certificate(tmp_path / "cert.pem", tmp_path / "key.pem", "*.example.com")
    named = ["auth.example.com", "AUTH.Example.com"]
    assert hosts_not_named(tmp_path / "cert.pem", [*named, "a.b.example.com", "example.com"]) == [
        "a.b.example.com",
        "example.com",
    ]


@pytest.mark.parametrize(
    ("bind", "host"),
    [
        ("0.0.0.0:9443", None),
        ("[::]:9443", None),
        ("unix:/run/foo.sock", None),
        ("fd://3", None),
        ("10.0.0.5:9443", "10.0.0.5"),
        ("[2001:db8::1]:9443", "2001:db8::1"),
        ("auth.internal:9443", "auth.internal"),
    ],
)
def test_the_address_clients_may_use_is_read_from_bind(bind, host):
    assert bind_host(bind) == host


def test_bootstrap_remakes_its_certificate_when_the_issuer_moves_and_says_so(tmp_path):
    environment = clean_environment(tmp_path, ADMIN_PASSWORD="a long enough test password")
    cert = tmp_path / "tls" / "cert.pem"

    first = manage(environment, "bootstrap")
    assert first.returncode == 0, first.stderr
    assert f"Created a self-signed TLS certificate: {cert}" in first.stdout
    assert hosts_not_named(cert, ["auth.example.com"]) == ["auth.example.com"]

    # ISSUER's host changed (BIND's address too): the server would serve a certificate for localhost.
    moved = {**environment, "ISSUER": "https://auth.example.com", "BIND": "10.0.0.5:9443"}
    second = manage(moved, "bootstrap")
    assert second.returncode == 0, second.stderr
    lines = [line for line in second.stdout.splitlines() if "certificate" in line]
    assert lines == [
        "Made a new self-signed TLS certificate, as the old one did not name "
        f"auth.example.com, 10.0.0.5: {cert}"
    ]
    assert hosts_not_named(cert, [*LOOPBACK, "auth.example.com", "10.0.0.5"]) == []

    kept = cert.read_bytes()
    third = manage(moved, "bootstrap")
    assert third.returncode == 0, third.stderr
    assert "certificate" not in third.stdout + third.stderr and cert.read_bytes() == kept

    # The operator's own certificate, for another name: warned about, never overwritten.
    operators_certificate(cert, tmp_path / "tls" / "key.pem", "old.example.com")
    theirs = cert.read_bytes()
    fourth = manage(moved, "bootstrap")
    assert fourth.returncode == 0, fourth.stderr
    assert cert.read_bytes() == theirs
    assert fourth.stderr.strip() == (
        f"Warning: {cert} does not name auth.example.com (ISSUER's host) and was not made by bootstrap, "
        "so it is left as it is: clients checking the name will refuse it"
    )
    assert "certificate" not in fourth.stdout
