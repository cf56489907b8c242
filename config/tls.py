"""A self-signed certificate so that `make run` serves HTTPS on a fresh machine."""

import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Written into the subject of every certificate bootstrap makes: how it tells its own (which it may
# make again) from one an operator put in var/tls (which it never touches).
MADE_BY_BOOTSTRAP = "self-signed by manage.py bootstrap"


def _subject_alternative_names(hosts: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _load(cert_path: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    except ValueError:  # not PEM: not bootstrap's, and no name a client could check
        return None


def hosts_not_named(cert_path: Path, hosts: list[str]) -> list[str]:
    """Those of `hosts` the certificate at `cert_path` does not name in its subjectAltName (a client
    checking the name refuses it for them)."""
    certificate = _load(cert_path)
    if certificate is None:
        return list(dict.fromkeys(hosts))
    try:
        named = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:  # a certificate naming no host
        return list(dict.fromkeys(hosts))
    addresses = set(named.get_values_for_type(x509.IPAddress))
    names = {name.lower() for name in named.get_values_for_type(x509.DNSName)}
    missing = []
    for host in dict.fromkeys(hosts):
        try:
            covered = ipaddress.ip_address(host) in addresses
        except ValueError:  # a name, or one label under a wildcard (RFC 6125 6.4.3)
            host = host.lower()
            covered = host in names or f"*.{host.partition('.')[2]}" in names
        if not covered:
            missing.append(host)
    return missing


def made_by_bootstrap(cert_path: Path) -> bool:
    certificate = _load(cert_path)
    if certificate is None:
        return False
    makers = [maker.value for maker in certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    return certificate.issuer == certificate.subject and makers == [MADE_BY_BOOTSTRAP]


def ensure_self_signed_certificate(cert_path: Path, key_path: Path, hosts: list[str]) -> str | None:
    """Write a self-signed certificate and key for `hosts` unless both exist, or again when the
    existing one is bootstrap's own and does not name every host (ISSUER's host changed, say).
    "created" or "remade" when one was written; None when the files were left as they were."""
    if cert_path.exists() and key_path.exists():
        if not (made_by_bootstrap(cert_path) and hosts_not_named(cert_path, hosts)):
            return None
        outcome = "remade"
    else:
        outcome = "created"
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, hosts[0]),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, MADE_BY_BOOTSTRAP),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(_subject_alternative_names(hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as key_file:
        key_file.write(key_bytes)
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return outcome


def served_self_signed_certificate(cert_path: Path) -> Path | None:
    """`cert_path` when the server's certificate there is self-signed (clients must be told to trust
    it, e.g. `curl --cacert`); None for a certificate from an authority, or none at all."""
    try:
        certificate = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    except FileNotFoundError:
        return None
    return Path(cert_path) if certificate.issuer == certificate.subject else None


def served_self_signed_certificate_pem(cert_path: Path) -> str | None:
    """The PEM of the server's certificate when it is self-signed, for clients to trust: the
    certificate alone, re-encoded, never a private key kept in the same file (one PEM for both)."""
    served = served_self_signed_certificate(cert_path)
    if served is None:
        return None
    certificate = x509.load_pem_x509_certificate(served.read_bytes())
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")
