"""Settings for the Foo authorization server, Foo API and SDK portal.

Everything a deployment changes comes from the environment (README, "Environment").
"""

import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
import redis.connection

from config.env import (
    TOKEN_LIFETIME_RANGE,
    ConfigurationError,
    bind_host,
    env_bind,
    env_bool,
    env_int,
    env_issuer,
    env_list,
    env_origins,
    env_service_url,
    env_str,
    persistent_secret_key,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY", "") or persistent_secret_key(VAR_DIR / "secret_key")

# The issuer identifier published in RFC 8414 metadata; endpoint URLs are built on it. Unset, it
# follows the port in BIND (https://localhost:9443 by default).
BIND = env_bind("BIND")
ISSUER = env_issuer("ISSUER", BIND)
TLS = env_bool("TLS", True)

# The names the certificate bootstrap makes is for: ISSUER's host and BIND's address (unless a
# wildcard). Django matches an IPv6 address in its brackets, as the Host header carries it.
_default_hosts = sorted(
    {"localhost", "127.0.0.1", "[::1]"}
    | {f"[{host}]" if ":" in host else host for host in (urlsplit(ISSUER).hostname, bind_host(BIND)) if host}
)
# Set but empty (`ALLOWED_HOSTS=` in an env file) counts as unset: no host at all would answer every
# request, the health probes included, with a 400.
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", _default_hosts) or _default_hosts

INSTALLED_APPS = [
    "authserver.apps.ConsoleAdminConfig",  # django.contrib.admin, with the console as its site
    "authserver.accounts",  # before django.contrib.auth: its createsuperuser is the one manage.py runs
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "oauth2_provider",
    "authserver",
    "fooapi",
    "sdkportal",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "authserver.security.SecurityHeadersMiddleware",
    # Inside the two above: its early answers (413, 415, 501) get HSTS, nosniff and the policy too.
    "authserver.middleware.ProtocolErrorMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "authserver.sessions.SessionPolicyMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database: SQLite under var/ by default, PostgreSQL through DATABASE_URL ---------------------
DATABASE_URL = env_str("DATABASE_URL", "") or f"sqlite:///{VAR_DIR / 'db.sqlite3'}"
try:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=600, conn_health_checks=True)}
except ValueError as error:  # an unknown scheme, a port that is no number
    raise ConfigurationError(f"DATABASE_URL: {error}") from None
if DATABASES["default"]["ENGINE"] not in ("django.db.backends.sqlite3", "django.db.backends.postgresql"):
    # mysql://, oracle://, ... are schemes dj_database_url knows: Django failed later, a traceback
    # about a driver this project neither installs nor supports.
    scheme = urlsplit(DATABASE_URL).scheme
    raise ConfigurationError(
        f"DATABASE_URL: {scheme}:// is not supported; expected sqlite:/// or postgres://"
    )
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        # WAL lets readers run beside the one writer; IMMEDIATE takes the write lock when a
        # transaction starts, so concurrent workers queue (busy timeout) instead of failing
        # with "database is locked" when a read lock cannot be upgraded.
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
else:
    # Fail fast when the database is unreachable instead of hanging the worker.
    DATABASES["default"].setdefault("OPTIONS", {})["connect_timeout"] = env_int(
        "DATABASE_CONNECT_TIMEOUT", 3, minimum=1
    )  # libpq waits forever on 0
# PostgreSQL: what one statement of a served request may take, lock waits included (a change left
# uncommitted holding the row a token's write needs): then a 503, as for an unreachable database,
# well before gunicorn's worker timeout (30 s) kills the worker. Set on the server's connections
# only (config/wsgi.py): migrations and management commands may take longer.
DATABASE_STATEMENT_TIMEOUT = env_int("DATABASE_STATEMENT_TIMEOUT", 10, minimum=1)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Django's backend, without a health-check round trip on every request under load.
    DATABASES["default"]["ENGINE"] = "config.postgresql"
    if env_bool("DATABASE_PREPARED_STATEMENTS", True):
        # Parameters bound by the server and statements run five times prepared: PostgreSQL then
        # no longer parses and plans the hot path's few statements on every request (half its CPU,
        # docs/benchmarks.md). Off behind a pooler that cannot keep prepared statements
        # (PgBouncer in transaction mode before 1.21).
        DATABASES["default"]["OPTIONS"].update(server_side_binding=True, prepare_threshold=5)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Workers remember looked-up tokens and clients until one is revoked, disabled or changed
# (authserver/validity.py): "shared" keeps that epoch in the database, changed in the change's own
# transaction, read once per request by app servers on any machine, and checked where a token is
# written; "local" shares it through a file on this machine (no read, but a token issued while its
# client changes may keep what the change took away); "off" remembers nothing.
TOKEN_CACHE = env_str("TOKEN_CACHE", "shared")
if TOKEN_CACHE not in ("local", "shared", "off"):
    raise ConfigurationError(f"TOKEN_CACHE={TOKEN_CACHE!r}: expected local, shared or off")

# Whether a token issue's commit (the token with its audit event) waits until PostgreSQL has
# flushed it to disk. Off: it is answered at once and a database crash within the WAL writer's
# delay may lose it, both rows together: a lost token fails closed (401 invalid_token) and its
# client gets another. Revocations, disabled clients, new secrets and every other change always
# wait (docs/benchmarks.md). SQLite's WAL with synchronous=NORMAL commits every write so.
TOKEN_SYNCHRONOUS_COMMIT = env_bool("TOKEN_SYNCHRONOUS_COMMIT", False)

# --- Cache: Redis shared by every app node when REDIS_URL is set ---------------------------------
REDIS_URL = env_str("REDIS_URL", "")
# Django's Redis cache takes several servers separated by commas or semicolons (the first is the
# primary). Without a scheme redis-py refuses each call: the cache would be "unreachable" and rate
# limits would fail open on every request.
if REDIS_URL and any(
    urlsplit(server.strip()).scheme not in ("redis", "rediss", "unix")
    for server in re.split("[;,]", REDIS_URL)
):
    # Not quoted: the URL may hold Redis's password.
    raise ConfigurationError("REDIS_URL: expected redis://, rediss:// or unix:// URLs")
for server in re.split("[;,]", REDIS_URL) if REDIS_URL else ():
    # A port that is no number, an option with a bad value: redis-py refused every call, and rate
    # limits failed open on every request, as for a scheme it does not take.
    try:
        redis.connection.parse_url(server.strip())
    except ValueError:  # its message may quote a part of the URL: a password typed where the port goes
        raise ConfigurationError(
            "REDIS_URL: malformed (a port that is no number or out of range, an option with a bad value)"
        ) from None
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "foo",
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Authentication ----------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.BCryptSHA256PasswordHasher",
    "django.contrib.auth.hashers.ScryptPasswordHasher",
    # Client secrets only (CLIENT_SECRET_HASHER below); listed so stored hashes can be verified.
    "authserver.hashers.ClientSecretHasher",
]
# The password of the `admin` account bootstrap creates; generated and printed once when unset.
ADMIN_PASSWORD = env_str("ADMIN_PASSWORD", "")
# Django's ModelBackend, a username matched in any case (as it is unique in any case).
AUTHENTICATION_BACKENDS = ["authserver.backends.CaseInsensitiveModelBackend"]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/portal/"
LOGOUT_REDIRECT_URL = "/portal/"
# Sessions (authserver/sessions.py): a staff account's (the console) ends after 30 minutes without a
# request and 12 hours after its login (NIST SP 800-63B AAL2, OWASP ASVS 3.3.2 level 2); a
# developer's (the portal, their own sandbox client) after a day without one and a week.
STAFF_SESSION_IDLE_TIMEOUT = 30 * 60
STAFF_SESSION_LIFETIME = 12 * 3600
DEVELOPER_SESSION_IDLE_TIMEOUT = 24 * 3600
DEVELOPER_SESSION_LIFETIME = 7 * 24 * 3600
# A session nobody signed in to (a form's messages): no longer than a developer's.
SESSION_COOKIE_AGE = DEVELOPER_SESSION_LIFETIME

# --- HTTP security -----------------------------------------------------------------------------
# Over TLS always (DEBUG included); without it only in production, where a proxy terminates TLS.
SECURE_COOKIES = env_bool("SECURE_COOKIES", TLS or not DEBUG)
SESSION_COOKIE_SECURE = SECURE_COOKIES
CSRF_COOKIE_SECURE = SECURE_COOKIES
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_HTTPONLY = True
CSRF_FAILURE_VIEW = "authserver.errors.csrf_failure"
CSRF_TRUSTED_ORIGINS = env_origins("CSRF_TRUSTED_ORIGINS", [ISSUER])
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# With TLS=off a proxy terminates TLS (README); it sets X-Forwarded-Proto and owns HSTS.
SECURE_PROXY_SSL_HEADER = None if TLS else ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = TLS
SECURE_HSTS_SECONDS = 31_536_000 if TLS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = TLS
SECURE_HSTS_PRELOAD = TLS
# Rate limits: (events, per seconds), counted per address and client in the shared cache
# (authserver/throttling.py; README "What the server promises").
THROTTLE_ENABLED = env_bool("THROTTLE", True)
THROTTLE_LIMITS = {
    "token_requests_per_address": (env_int("THROTTLE_TOKEN_REQUESTS_PER_MINUTE", 6000, minimum=1), 60),
    "client_auth_failures_per_client_and_address": (10, 300),
    "client_auth_failures_per_address": (50, 300),
    "login_failures_per_user_and_address": (5, 900),
    "login_failures_per_address": (30, 900),
    "signups_per_address": (10, 3600),
    # Reset emails: per address, and per email address so that nobody's mailbox is flooded.
    "password_resets_per_address": (10, 3600),
    "password_resets_per_email": (3, 3600),
    # Clients one registrar (the client holding the initial access tokens) may register: a CI
    # pipeline registering one per run stays well under; a leaked token registers at most 200 in
    # its default hour of life (across two windows) and 500 in any UTC day, not thousands.
    "registrations_per_registrar_per_hour": (100, 3600),
    "registrations_per_registrar_per_day": (500, 86400),
}
# How many proxies in front of gunicorn append to X-Forwarded-For (0: use the socket's address).
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0, minimum=0)
# Request bodies above this size are answered 413 before they are read.
MAX_REQUEST_BODY_BYTES = env_int("MAX_REQUEST_BODY_BYTES", 64 * 1024, minimum=1)
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BODY_BYTES
DATA_UPLOAD_MAX_NUMBER_FIELDS = 200

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# --- OAuth 2.0 (django-oauth-toolkit, extended through its settings-named classes) --------------
OAUTH2_PROVIDER_APPLICATION_MODEL = "authserver.Application"
# Within what a client's own lifetime may be: a sandbox client is registered with it.
ACCESS_TOKEN_LIFETIME = env_int("ACCESS_TOKEN_LIFETIME", 3600, **TOKEN_LIFETIME_RANGE)
SANDBOX_TOKEN_LIFETIME = env_int("SANDBOX_TOKEN_LIFETIME", 3600, **TOKEN_LIFETIME_RANGE)
OAUTH_REALM = "foo"
OAUTH2_PROVIDER = {
    "OAUTH2_SERVER_CLASS": "authserver.oauth.ClientCredentialsServer",
    # The management console's admins for DOT's models (authserver/admin.py).
    "APPLICATION_ADMIN_CLASS": "authserver.admin.ApplicationAdmin",
    "ACCESS_TOKEN_ADMIN_CLASS": "authserver.admin.AccessTokenAdmin",
    "GRANT_ADMIN_CLASS": "authserver.admin.NotServedAdmin",
    "ID_TOKEN_ADMIN_CLASS": "authserver.admin.NotServedAdmin",
    "REFRESH_TOKEN_ADMIN_CLASS": "authserver.admin.NotServedAdmin",
    "OAUTH2_VALIDATOR_CLASS": "authserver.oauth.Validator",
    "OAUTH2_BACKEND_CLASS": "authserver.oauth.OAuthLibCore",
    # Scopes are rows of authserver.Scope, edited in the admin.
    "SCOPES_BACKEND_CLASS": "authserver.scopes.DatabaseScopes",
    "CLIENT_SECRET_HASHER": "client_secret_sha256",
    "CLIENT_SECRET_GENERATOR_LENGTH": 48,
    # oauthlib's token format, drawn from the random source once per token (bench/, docs/benchmarks.md).
    "ACCESS_TOKEN_GENERATOR": "authserver.oauth.generate_access_token",
    # manage.py clear_expired_tokens: 1,000,000 rows in under a minute, issuance waits one batch at most.
    "CLEAR_EXPIRED_TOKENS_BATCH_SIZE": 5000,
    "CLEAR_EXPIRED_TOKENS_BATCH_INTERVAL": 0.01,
    "ACCESS_TOKEN_EXPIRE_SECONDS": ACCESS_TOKEN_LIFETIME,
    "OIDC_ISS_ENDPOINT": ISSUER,
    "OAUTH2_GRANT_TYPES_SUPPORTED": ["client_credentials"],
    "OAUTH2_RESPONSE_TYPES_SUPPORTED": [],
    "OAUTH2_TOKEN_ENDPOINT_AUTH_METHODS_SUPPORTED": ["client_secret_basic", "client_secret_post"],
    "OAUTH2_PROTECTED_RESOURCE_IDENTIFIER": ISSUER,
    "OAUTH2_PROTECTED_RESOURCE_AUTHORIZATION_SERVERS": [ISSUER],
    "OAUTH2_PROTECTED_RESOURCE_NAME": "Foo API",
    "OAUTH2_PROTECTED_RESOURCE_DOCUMENTATION": f"{ISSUER}/api/v1/docs",
    "DCR_ENABLED": True,
    # Registration access tokens (RFC 7592) carry this scope; it is not a scope clients can ask for.
    "DCR_REGISTRATION_SCOPE": "client:configure",
    "ALLOWED_REDIRECT_URI_SCHEMES": ["https"],
    "ALLOW_URI_WILDCARDS": False,
    "PKCE_REQUIRED": True,
    "REFRESH_TOKEN_REUSE_PROTECTION": True,
    "COMPLIANT_BCP_RFC9700_IMPLICIT_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PASSWORD_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PKCE_METHOD": True,
    "COMPLIANT_BCP_RFC9700_ACCESS_TOKEN_TRANSPORT": True,
    "COMPLIANT_BCP_RFC9700_AUTHZ_RESPONSE_ISS": True,
    "COMPLIANT_BCP_RFC9700_TOKEN_STORAGE": True,
    "COMPLIANT_BCP_RFC9700_REFRESH_TOKEN": True,
    "COMPLIANT_BCP_RFC9700_REDIRECT_URI_SCHEME": True,
    "COMPLIANT_BCP_RFC9700_REDIRECT_URI_MATCHING": True,
    "COMPLIANT_BCP_RFC9700_PKCE_REQUIRED": True,
}

# --- Foo API: OpenAPI schema at /api/v1/schema, reference at /api/v1/docs ----------------------
SPECTACULAR_SETTINGS = {
    "TITLE": "Foo API",
    "DESCRIPTION": (
        "The Foo catalogue and orders. Every call needs a bearer token from the client credentials "
        f"grant (`POST {ISSUER}/oauth2/token`) with the scope the operation names. Developers get "
        f"a sandbox client and a test token from the [SDK portal]({ISSUER}/portal/). Every error is a "
        "JSON `Error`; a method a path does not have is a 405 whose `Allow` names the ones it has."
    ),
    "VERSION": "1.0.0",
    "TAGS": [
        {"name": "products", "description": "The catalogue (`products:read`)."},
        {"name": "orders", "description": "Your client's orders (`orders:read`, `orders:write`)."},
    ],
    "SERVERS": [{"url": ISSUER}],
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "SERVE_AUTHENTICATION": [],
    "DEFAULT_GENERATOR_CLASS": "fooapi.schema.FooApiSchemaGenerator",
}

# --- SDK portal ------------------------------------------------------------------------------
# The portal's own client (it shows the live catalogue): from the environment, else the file
# bootstrap writes (0600, like the secret key).
PORTAL_CLIENT_ID = env_str("PORTAL_CLIENT_ID", "")
PORTAL_CLIENT_SECRET = env_str("PORTAL_CLIENT_SECRET", "")
PORTAL_CREDENTIALS_FILE = VAR_DIR / "portal_client.json"
# Where the portal itself calls the API: the public URLs unless a closer address is given.
PORTAL_API_BASE_URL = env_service_url("PORTAL_API_BASE_URL", f"{ISSUER}/api/v1")
PORTAL_TOKEN_URL = env_service_url("PORTAL_TOKEN_URL", f"{ISSUER}/oauth2/token")
PORTAL_API_TIMEOUT = env_int("PORTAL_API_TIMEOUT", 5, minimum=1)
PORTAL_CATALOGUE_CACHE_SECONDS = env_int("PORTAL_CATALOGUE_CACHE_SECONDS", 60, minimum=0)

# --- Email: the portal's password reset, offered only when EMAIL_HOST is set ---------------------
EMAIL_HOST = env_str("EMAIL_HOST", "").strip()
EMAIL_PORT = env_int("EMAIL_PORT", 587, minimum=1, maximum=65535)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
# A worker waiting on an unreachable mail server must not hang until gunicorn kills it.
EMAIL_TIMEOUT = 10
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "") or f"noreply@{urlsplit(ISSUER).hostname}"
if EMAIL_HOST_PASSWORD and not EMAIL_HOST_USER:
    raise ConfigurationError("EMAIL_HOST_PASSWORD is set without EMAIL_HOST_USER: set both or neither")
if any(character in DEFAULT_FROM_EMAIL for character in "\r\n"):
    raise ConfigurationError(f"DEFAULT_FROM_EMAIL={DEFAULT_FROM_EMAIL!r}: expected one line")
# A reset link works for an hour (Django's default is three days), and once.
PASSWORD_RESET_TIMEOUT = 3600

# --- Django REST framework ---------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["authserver.authentication.BearerTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["authserver.permissions.TokenHasRequiredScopes"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["authserver.parsers.JSONParser"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "authserver.negotiation.JSONFirstNegotiation",
    "EXCEPTION_HANDLER": "authserver.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

# --- Logging: to stderr; libraries that log credentials at DEBUG are held at WARNING -------------
LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
if LOG_LEVEL not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
    raise ConfigurationError(f"LOG_LEVEL={LOG_LEVEL!r}: expected DEBUG, INFO, WARNING, ERROR or CRITICAL")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "redact_credentials": {"()": "authserver.log_filters.RedactCredentials"},
        "client_errors_without_tracebacks": {"()": "authserver.log_filters.ClientErrorsWithoutTracebacks"},
    },
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["client_errors_without_tracebacks", "redact_credentials"],
        }
    },
    "root": {"handlers": ["stderr"], "level": LOG_LEVEL},
    "loggers": {
        # oauthlib logs whole token responses at DEBUG.
        "oauthlib": {"level": "WARNING"},
        "oauth2_provider": {"level": "WARNING"},
        "django.db.backends": {"level": "INFO"},
    },
}

# --- Serving (config/gunicorn.conf.py, manage.py bootstrap) ------------------------------------
# gunicorn's sync workers; read here so that `make run`'s bootstrap already refuses a bad value
# (gunicorn parses WEB_CONCURRENCY itself before its config file, with a traceback: empty too, so
# empty is refused here rather than taken as unset). 0 would listen with no worker to answer: every
# request would hang.
if os.environ.get("WEB_CONCURRENCY") == "":
    raise ConfigurationError("WEB_CONCURRENCY='': expected a whole number (unset it for 2 per core)")
WEB_CONCURRENCY = env_int("WEB_CONCURRENCY", 2 * (os.cpu_count() or 1), minimum=1)
# A sync worker answers one request at a time with about a millisecond of CPU (docs/benchmarks.md):
# beyond a few per core more only add memory and database connections; 100000 would fork the
# machine to a halt. 16 per core leaves room for a slow database.
WEB_CONCURRENCY_MAXIMUM = 16 * (os.cpu_count() or 1)
if WEB_CONCURRENCY > WEB_CONCURRENCY_MAXIMUM:
    raise ConfigurationError(
        f"WEB_CONCURRENCY={os.environ['WEB_CONCURRENCY']!r}: expected at most {WEB_CONCURRENCY_MAXIMUM} "
        "(16 per core: more sync workers add memory and database connections, not speed)"
    )
TLS_CERT_FILE = VAR_DIR / "tls" / "cert.pem"
TLS_KEY_FILE = VAR_DIR / "tls" / "key.pem"
WHITENOISE_MANIFEST_STRICT = False
