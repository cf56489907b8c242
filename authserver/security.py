"""Security headers Django's SecurityMiddleware does not set (README "What the server promises").

Every HTML page (management console, SDK portal, API docs) gets a Content-Security-Policy that
allows only this site's own bundled scripts: no inline script, no eval, nothing from another
origin. Every other response (JSON for machines, static files) gets a policy that allows nothing
at all. Django's other headers (HSTS, X-Frame-Options, Referrer-Policy, nosniff) come from settings.
"""

import base64
import hashlib
import re
from pathlib import Path

import django.contrib.admin

# Django's admin has one inline <style> block (change_list.html, for a list without actions);
# allowed by its hash, read from the installed Django so an upgrade keeps it right.
_ADMIN_CHANGE_LIST = Path(django.contrib.admin.__file__).parent / "templates" / "admin" / "change_list.html"


def _inline_style_hashes(template: Path) -> list[str]:
    blocks = re.findall(r"<style>(.*?)</style>", template.read_text(), flags=re.DOTALL)
    return [
        f"'sha256-{base64.b64encode(hashlib.sha256(block.encode()).digest()).decode()}'" for block in blocks
    ]


PAGE_POLICY = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'", *_inline_style_hashes(_ADMIN_CHANGE_LIST)],
    # data: for the SVG icons Swagger UI's stylesheet embeds.
    "img-src": ["'self'", "data:"],
    "font-src": ["'self'"],
    "connect-src": ["'self'"],
    "object-src": ["'none'"],
    "base-uri": ["'none'"],
    "form-action": ["'self'"],
    "frame-ancestors": ["'none'"],
}
# JSON and files: nothing to run, nothing to embed them.
RESOURCE_POLICY = {"default-src": ["'none'"], "frame-ancestors": ["'none'"]}
PERMISSIONS_POLICY = "camera=(), microphone=(), geolocation=(), payment=(), usb=()"


def _header(policy: dict[str, list[str]]) -> str:
    return "; ".join(" ".join([directive, *sources]) for directive, sources in policy.items())


PAGE_POLICY_HEADER = _header(PAGE_POLICY)
RESOURCE_POLICY_HEADER = _header(RESOURCE_POLICY)


class SecurityHeadersMiddleware:
    """Content-Security-Policy and Permissions-Policy on every response that has none yet."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        is_page = response.get("Content-Type", "").startswith("text/html")
        response.headers.setdefault(
            "Content-Security-Policy", PAGE_POLICY_HEADER if is_page else RESOURCE_POLICY_HEADER
        )
        response.headers.setdefault("Permissions-Policy", PERMISSIONS_POLICY)
        return response
