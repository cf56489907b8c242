"""A real browser for the console and portal tests: Playwright driving Debian's Chromium.

Chromium is launched by path (no browser download); `.ci/run` installs the `chromium` package.
Without it, browser tests skip with that reason. Screenshots go to test-output/screenshots/.
"""

import base64
import hashlib
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.servers import ensure_certificate

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-output" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require_chromium() -> None:
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        pytest.skip(f"no Chromium at {CHROMIUM}: install Debian's chromium package (.ci/run does)")


def trust_certificate_argument() -> str:
    """Chromium's switch that trusts var/tls's self-signed certificate (by its public key) and no
    other: every handshake then succeeds at once. Ignoring certificate errors per context instead
    makes Chromium fail each new connection and retry it, which under load ends in
    ERR_TOO_MANY_RETRIES on some static file."""
    certificate = x509.load_pem_x509_certificate(ensure_certificate().read_bytes())
    public_key = certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    fingerprint = base64.b64encode(hashlib.sha256(public_key).digest()).decode()
    return f"--ignore-certificate-errors-spki-list={fingerprint}"


@contextmanager
def chromium_page() -> Iterator["object"]:
    """A fresh browser context and page, trusting the self-signed certificate of var/tls."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        arguments = [*CHROMIUM_ARGS, trust_certificate_argument()]
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=arguments)
        try:
            context = browser.new_context(
                accept_downloads=True,
                viewport={"width": 1280, "height": 860},
            )
            page = context.new_page()
            page.set_default_timeout(15_000)
            yield page
        finally:
            browser.close()


def wait_until(page, condition, seconds: float = 15) -> None:
    """Until `condition()` holds, letting the page's route handlers run meanwhile (a fixed wait is
    too short on a loaded machine); fails after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {seconds}s")
        page.wait_for_timeout(50)


def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
