"""Operators manage clients from the command line: create_client, rotate_secret, cleartokens,
clear_expired_tokens, bootstrap."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import IntegrityError, OperationalError
from django.db.migrations.recorder import MigrationRecorder
from django.utils import timezone
from oauth2_provider.models import AccessToken

from authserver import hotpath, services
from authserver.models import Application, AuditEvent, Scope
from tests.helpers import Terminal, issue_token, request_token
from tests.servers import PROJECT_DIR, server_environment


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_create_client_prints_the_credentials_once(client, db):
    output = run("create_client", "--name", "billing")

    application = Application.objects.get(name="billing")
    assert f"client_id:     {application.client_id}" in output
    secret = output.split("client_secret:", 1)[1].split()[0]
    assert secret not in application.client_secret
    assert request_token(client, services.NewClient(application, secret)).status_code == 200
    assert "will not be shown again" in output


def test_create_client_json_with_scope_ttl_and_owner(client, db):
    User.objects.create_user("carol")
    output = run(
        "create_client", "--name", "reports", "--scope", "products:read orders:write", "--token-ttl", "600",
        "--owner", "carol", "--json",
    )  # fmt: skip

    created = json.loads(output)
    assert {"client_id", "client_secret", "scope"} <= set(created)
    assert created["scope"] == "orders:write products:read"
    application = Application.objects.get(client_id=created["client_id"])
    assert application.user.username == "carol"
    assert application.authorization_grant_type == Application.GRANT_CLIENT_CREDENTIALS
    token = request_token(client, services.NewClient(application, created["client_secret"])).json()
    assert token["expires_in"] == 600
    assert AuditEvent.objects.get(kind=AuditEvent.Kind.CLIENT_CREATED).actor == "manage.py create_client"


def test_create_client_takes_the_owners_username_in_any_case(db):
    User.objects.create_user("Carol")
    created = json.loads(run("create_client", "--name", "reports", "--owner", "carol", "--json"))
    assert Application.objects.get(client_id=created["client_id"]).user.username == "Carol"


def test_createsuperuser_refuses_a_username_taken_in_another_case(db, monkeypatch):
    User.objects.create_user("Alice")
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "a-long-enough-password-42")
    args = ("createsuperuser", "--noinput", "--username", "alice", "--email", "a@example.com")
    with pytest.raises(CommandError, match="already taken"):
        call_command(*args, stdout=StringIO())
    assert list(User.objects.values_list("username", flat=True)) == ["Alice"]


def test_createsuperuser_asks_again_for_a_username_taken_in_another_case(db, monkeypatch):
    User.objects.create_user("Alice")
    answers = iter(["ALICE", "bob"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(answers))
    monkeypatch.setattr("getpass.getpass", lambda prompt="": "a-long-enough-password-42")
    err = StringIO()
    call_command(
        "createsuperuser", "--email", "b@example.com", interactive=True, stdout=StringIO(), stderr=err,
        stdin=Terminal(),
    )  # fmt: skip
    assert "already taken" in err.getvalue()
    assert User.objects.get(is_superuser=True).username == "bob"


def test_create_client_defaults_to_the_sandbox_scopes(db):
    created = json.loads(run("create_client", "--name", "x", "--json"))
    assert created["scope"] == "orders:read products:read"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--scope", "products:read nope"], "Unknown scope: nope"),
        (["--owner", "ghost"], "No user named 'ghost'"),
        (["--token-ttl", "5"], "greater than or equal to 60"),
    ],
)
def test_create_client_refuses_bad_input(db, args, message):
    with pytest.raises(CommandError, match=message):
        run("create_client", "--name", "x", *args)
    assert not Application.objects.exists()


def test_create_client_trims_the_name_as_the_console_does(db):
    created = json.loads(run("create_client", "--name", "  billing  ", "--json"))
    assert created["name"] == "billing"
    assert Application.objects.get(client_id=created["client_id"]).name == "billing"


@pytest.mark.parametrize("name", ["", "   "])
def test_create_client_refuses_a_blank_name(db, name):
    with pytest.raises(CommandError, match="--name must not be blank"):
        run("create_client", "--name", name)
    assert not Application.objects.exists()


def test_rotate_secret_replaces_the_secret(client, new_client):
    output = json.loads(run("rotate_secret", new_client.application.client_id, "--json"))

    assert output["client_id"] == new_client.application.client_id
    assert request_token(client, new_client).status_code == 401
    rotated = services.NewClient(new_client.application, output["client_secret"])
    assert request_token(client, rotated).status_code == 200
    assert AuditEvent.objects.filter(kind=AuditEvent.Kind.SECRET_ROTATED).count() == 1


@pytest.mark.parametrize("as_json", [False, True])
def test_rotate_secret_of_a_disabled_client_says_the_new_secret_gets_no_token_yet(
    client, new_client, as_json
):
    # Was "The old secret no longer works" alone: the new one got invalid_client all the same.
    services.set_client_enabled(application=new_client.application, enabled=False, actor="test")
    out, err = StringIO(), StringIO()
    call_command(
        "rotate_secret",
        new_client.application.client_id,
        *(["--json"] if as_json else []),
        stdout=out,
        stderr=err,
    )

    assert "disabled" in err.getvalue()
    assert len(err.getvalue().strip().splitlines()) == 1
    if as_json:  # stdout stays the one JSON object
        json.loads(out.getvalue())
    assert "disabled" not in out.getvalue()


def test_rotate_secret_of_an_unknown_client_fails(db):
    with pytest.raises(CommandError, match="No client"):
        run("rotate_secret", "nobody")


def test_cleartokens_removes_expired_tokens(client, new_client):
    issue_token(client, new_client)
    issue_token(client, new_client)
    AccessToken.objects.filter(pk=AccessToken.objects.first().pk).update(
        expires=timezone.now() - timedelta(days=1)
    )
    call_command("cleartokens")
    assert AccessToken.objects.count() == 1


def test_create_client_refuses_an_empty_scope(db):
    # As the console does: a client without scopes gets no token.
    with pytest.raises(CommandError, match="--scope must name at least one scope"):
        run("create_client", "--name", "x", "--scope", " ")
    assert not Application.objects.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--batch-size", "0"], "--batch-size must be 1 to 1000000"),
        (["--batch-size", "-5"], "--batch-size must be 1 to 1000000"),
        # Was a traceback: a LIMIT beyond the database's integers ("bigint out of range").
        (["--batch-size", "100000000000000000000"], "--batch-size must be 1 to 1000000"),
        (["--batch-size", "1000001"], "--batch-size must be 1 to 1000000"),
        (["--pause", "-1"], "--pause must be a number of seconds, 0 or more"),
        (["--pause", "nan"], "--pause must be a number of seconds, 0 or more"),
        (["--pause", "inf"], "--pause must be a number of seconds, 0 or more"),
    ],
)
def test_clear_expired_tokens_refuses_bad_input_before_deleting_anything(new_client, args, message):
    expired = timezone.now() - timedelta(days=1)
    AccessToken.objects.create(application=new_client.application, token="a", expires=expired)
    AccessToken.objects.create(application=new_client.application, token="b", expires=expired)
    with pytest.raises(CommandError, match=message):
        call_command("clear_expired_tokens", "--no-progress", *args, stdout=StringIO())
    assert AccessToken.objects.count() == 2


def test_clear_expired_tokens_interrupted_says_what_it_deleted(new_client, monkeypatch, capsys):
    expired = timezone.now() - timedelta(days=1)
    for token in "abc":
        AccessToken.objects.create(application=new_client.application, token=token, expires=expired)

    def interrupt(seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr("authserver.services.time.sleep", interrupt)
    with pytest.raises(CommandError, match="Interrupted after deleting 2 expired access tokens") as raised:
        call_command("clear_expired_tokens", "--batch-size", "2", "--pause", "1")
    assert raised.value.returncode == 130
    assert AccessToken.objects.count() == 1  # the batch that committed stays deleted


@pytest.mark.parametrize(
    "args, service",
    [
        (["create_client", "--name", "x"], "register_client"),
        (["rotate_secret", "abc"], "find_client"),
        (["clear_expired_tokens"], "clear_expired_tokens"),
        (["bench_load_tokens", "--count", "1"], "register_client"),
    ],
)
def test_an_unreachable_database_is_a_clear_error(db, monkeypatch, args, service):
    def unreachable(*args, **kwargs):
        raise OperationalError('connection to server at "db.example", port 5432 failed: Connection refused')

    monkeypatch.setattr(f"authserver.services.{service}", unreachable)
    with pytest.raises(CommandError, match=r"Database error: connection to server .* Connection refused"):
        run(*args)


# --- what an operator types that cannot be taken ----------------------------------------------


def manage_py(*arguments: str | bytes, environment: dict | None = None, **popen) -> subprocess.Popen:
    """manage.py as an operator runs it, against the test database (transactional_db)."""
    return subprocess.Popen(
        [sys.executable, "manage.py", *arguments], cwd=PROJECT_DIR,
        env=server_environment(**(environment or {})),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen,
    )  # fmt: skip


def test_an_argument_that_is_not_utf8_is_one_line_not_a_traceback(transactional_db):
    # Was a UnicodeEncodeError traceback from the database driver (lone surrogates).
    refused = manage_py("create_client", "--name", b"caf\xe9", "--json")
    stdout, stderr = refused.communicate(timeout=60)

    assert refused.returncode == 1
    assert stderr == "CommandError: --name is not valid UTF-8 (check the shell's or script's encoding).\n"
    assert stdout == ""
    assert not Application.objects.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["create_client", "--name", "bad\udcffname"], "--name is not valid UTF-8"),
        (["create_client", "--name", "x", "--owner", "\udcff"], "--owner is not valid UTF-8"),
        (["rotate_secret", "\udcff"], "CLIENT_ID is not valid UTF-8"),
        # Was a client named with an escape sequence, or a tab taken as a scope separator.
        (["create_client", "--name", "billing\x1b[2J"], "--name holds a control character"),
        (["create_client", "--name", "billing\nservice"], "--name holds a control character"),
        (
            ["create_client", "--name", "x", "--scope", "products:read\torders:read"],
            "--scope holds a control",
        ),
        (["rotate_secret", "abc\x85"], "CLIENT_ID holds a control character"),
    ],
)
def test_arguments_with_control_characters_or_not_utf8_are_refused(db, args, message):
    with pytest.raises(CommandError, match=re.escape(message)):
        run(*args)
    assert not Application.objects.exists()
    assert not AuditEvent.objects.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--token-ttl", "99999999999"], "--token-ttl: Ensure this value is less than or equal to 604800."),
        (["--token-ttl", "-5"], "--token-ttl: Ensure this value is greater than or equal to 60."),
        (["--name", "x" * 300], "--name: Ensure this value has at most 255 characters (it has 300)."),
        # U+202E would reverse the console's text after the name (authserver/bidi.py).
        (
            ["--name", "billing\u202eecivres"],
            "--name: Remove the bidirectional control characters (U+202A to U+202E, U+2066 to U+2069): "
            "they would reorder the text shown after the name.",
        ),
    ],
)
def test_create_client_names_the_option_it_refuses(db, args, message):
    with pytest.raises(CommandError) as refused:
        run("create_client", "--name", "x", *args)
    assert str(refused.value) == message
    assert not Application.objects.exists()


def test_create_client_for_a_deactivated_owner_says_so(db):
    # Was the console's words: "... or leave the client disabled", which no option of the command does.
    User.objects.create_user("dora", is_active=False)
    with pytest.raises(CommandError) as refused:
        run("create_client", "--name", "x", "--owner", "dora")
    assert str(refused.value) == "The user 'dora' is deactivated: activate the account first."
    assert not Application.objects.exists()


def test_migrating_over_usernames_differing_only_in_case_names_them_and_changes_nothing(transactional_db):
    """The unique index on the lowercase username (authserver 0009) cannot be made over accounts
    that already differ only in case: the operator is told which, and how to go on; no traceback."""
    call_command("migrate", "authserver", "0008", verbosity=0)
    try:
        first, second = User.objects.create_user("ada"), User.objects.create_user("ADA")
        User.objects.create_user("bob")
        with pytest.raises(CommandError) as refused:
            call_command("migrate", "authserver", verbosity=0)
        message = str(refused.value)
        assert f"'ada' (id {first.pk}), 'ADA' (id {second.pk})" in message
        assert "bob" not in message
        assert "Rename or delete all but one of each" in message
        assert "Nothing was changed" in message
        applied = MigrationRecorder.Migration.objects.filter(app="authserver").values_list("name", flat=True)
        assert "0009_username_unique_in_any_case" not in applied

        User.objects.filter(pk=second.pk).update(username="ada-2")
    finally:
        call_command("migrate", "authserver", verbosity=0)
    with pytest.raises(IntegrityError):
        User.objects.create_user("BOB")


# --- clear_expired_tokens: logs and Ctrl-C -------------------------------------------------------


def expired_tokens(application, count: int) -> None:
    expired = timezone.now() - timedelta(days=1)
    for number in range(count):
        AccessToken.objects.create(application=application, token=f"expired-{number}", expires=expired)


def test_clear_expired_tokens_draws_no_progress_bar_into_a_log(new_client, capsys):
    # Was a "\r[###...]" line per batch in cron's mail or the journal, whatever stderr was.
    expired_tokens(new_client.application, 3)
    log = StringIO()
    call_command("clear_expired_tokens", "--batch-size", "1", "--pause", "0", stdout=StringIO(), stderr=log)

    assert log.getvalue() == ""
    assert capsys.readouterr().err == ""
    assert not AccessToken.objects.exists()


@pytest.mark.parametrize("verbosity, says", [(0, ""), (1, "Deleted 2 expired access tokens in ")])
def test_clear_expired_tokens_says_what_it_did_unless_quiet(new_client, verbosity, says):
    expired_tokens(new_client.application, 2)
    out = StringIO()
    call_command("clear_expired_tokens", "--pause", "0", verbosity=verbosity, stdout=out, stderr=StringIO())

    assert out.getvalue().startswith(says) and (says or out.getvalue() == "")
    assert not AccessToken.objects.exists()


def test_clear_expired_tokens_draws_its_progress_bar_on_a_terminal(new_client):
    expired_tokens(new_client.application, 2)
    terminal = Terminal()
    call_command(
        "clear_expired_tokens", "--batch-size", "1", "--pause", "0", stdout=StringIO(), stderr=terminal
    )

    assert "\r[####################....................] 1/2" in terminal.getvalue()
    assert terminal.getvalue().endswith("\n")


def test_ctrl_c_while_a_batch_commits_finishes_it_and_counts_it(new_client, monkeypatch):
    """Was a KeyboardInterrupt at once: a batch PostgreSQL committed all the same went uncounted
    ("Interrupted after deleting 0" with two tokens gone)."""
    expired_tokens(new_client.application, 3)
    queued_writes = hotpath.queued_writes

    @contextmanager
    def ctrl_c_as_it_commits(using="default"):
        with queued_writes(using):
            yield
        os.kill(os.getpid(), signal.SIGINT)  # the batch's transaction has just committed

    monkeypatch.setattr(hotpath, "queued_writes", ctrl_c_as_it_commits)
    with pytest.raises(CommandError) as raised:
        call_command("clear_expired_tokens", "--batch-size", "2", "--pause", "0", stdout=StringIO())

    assert (
        str(raised.value) == "Interrupted after deleting 2 expired access tokens; run it again for the rest."
    )
    assert raised.value.returncode == 130
    assert AccessToken.objects.count() == 1
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # given back


def test_ctrl_c_stops_clear_expired_tokens_with_one_line_and_status_130(transactional_db, new_client):
    expired_tokens(new_client.application, 40)
    clearing = manage_py("clear_expired_tokens", "--batch-size", "1", "--pause", "0.2")
    deadline = time.monotonic() + 60
    while AccessToken.objects.count() == 40 and time.monotonic() < deadline:
        time.sleep(0.05)
    clearing.send_signal(signal.SIGINT)
    stdout, stderr = clearing.communicate(timeout=60)

    assert clearing.returncode == 130
    assert stdout == ""
    deleted = int(re.fullmatch(r"CommandError: Interrupted after deleting (\d+) expired access tokens; "
                               r"run it again for the rest.\n", stderr)[1])  # fmt: skip
    assert 1 <= deleted < 40
    assert AccessToken.objects.count() == 40 - deleted


def test_ctrl_c_while_manage_py_starts_is_no_traceback(transactional_db):
    # Ctrl-C once Django is being imported, as Python reports each import that ends: after a fixed
    # sleep it could land in the interpreter's own start-up on a loaded machine (killed, or a traceback).
    starting = manage_py("clear_expired_tokens", environment={"PYTHONPROFILEIMPORTTIME": "1"})
    imports, deadline = b"", time.monotonic() + 60
    while not re.search(rb"\|\s+django[.\s]", imports) and time.monotonic() < deadline:
        if not (chunk := os.read(starting.stderr.fileno(), 65536)):
            break  # exited: the assertions below say how
        imports += chunk
    starting.send_signal(signal.SIGINT)
    stdout, stderr = starting.communicate(timeout=60)
    stderr = imports.decode(errors="replace") + stderr

    assert "Traceback" not in stderr
    assert starting.returncode == 130 or (starting.returncode == 0 and "Deleted 0" in stdout), stderr


# --- bootstrap, run again after an operator's changes --------------------------------------------


@pytest.fixture
def bootstrap(db, settings, monkeypatch):
    """bootstrap's own steps (no certificate, migrate or collectstatic, the portal's client named)."""
    settings.TLS = False
    settings.PORTAL_CLIENT_ID, settings.PORTAL_CLIENT_SECRET = "portal", "secret"
    monkeypatch.setattr("authserver.management.commands.bootstrap.call_command", lambda *a, **k: None)

    def run_bootstrap() -> tuple[str, str]:
        out, err = StringIO(), StringIO()
        call_command("bootstrap", stdout=out, stderr=err)
        return out.getvalue(), err.getvalue()

    return run_bootstrap


def test_bootstrap_leaves_the_sqlite_database_readable_by_its_owner_alone(tmp_path):
    """It holds every live session's key (a staff one opens the console) and the password hashes:
    it was world-readable (the umask's 0644) beside a secret key kept 0600. A file made before
    that is restricted by the next bootstrap too."""
    database = tmp_path / "db.sqlite3"
    database.touch(mode=0o644)
    environment = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "VAR_DIR": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{database}",
        "TLS": "off",
        "ADMIN_PASSWORD": "a-long-Password-1",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "bootstrap"], cwd=PROJECT_DIR, env=environment, capture_output=True,
        text=True, timeout=120, check=False,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert database.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600


def test_bootstrap_that_cannot_write_the_portals_credentials_registers_no_client(
    bootstrap, settings, tmp_path
):
    """A client whose secret was written nowhere would stay behind, usable by no one."""
    (tmp_path / "var").write_text("a file where a directory should be")
    settings.PORTAL_CLIENT_ID = settings.PORTAL_CLIENT_SECRET = ""
    settings.PORTAL_CREDENTIALS_FILE = tmp_path / "var" / "portal_client.json"

    with pytest.raises(CommandError, match=r"Cannot write the portal's credentials to .*portal_client\.json"):
        bootstrap()

    assert not Application.objects.exists()
    assert not AuditEvent.objects.filter(kind=AuditEvent.Kind.CLIENT_CREATED).exists()


def test_bootstrap_gives_the_portal_a_working_secret_again_after_an_operator_rotated_it(
    client, bootstrap, settings, tmp_path
):
    """`rotate_secret` on the portal's client (or the console's Rotate secret) left the file with a
    secret that no longer works: the portal's catalogue was unavailable for good, and bootstrap,
    seeing the client still there, said nothing."""
    settings.PORTAL_CLIENT_ID = settings.PORTAL_CLIENT_SECRET = ""
    settings.PORTAL_CREDENTIALS_FILE = tmp_path / "portal_client.json"
    bootstrap()
    stored = json.loads(settings.PORTAL_CREDENTIALS_FILE.read_text())
    run("rotate_secret", stored["client_id"])

    out, _ = bootstrap()

    again = json.loads(settings.PORTAL_CREDENTIALS_FILE.read_text())
    assert again["client_id"] == stored["client_id"]  # the same client, no second one
    assert Application.objects.filter(name="sdk-portal").count() == 1
    application = Application.objects.get(client_id=again["client_id"])
    assert request_token(client, services.NewClient(application, again["client_secret"])).status_code == 200
    assert "portal" in out and "secret" in out
    # And once it works, nothing changes.
    bootstrap()
    assert json.loads(settings.PORTAL_CREDENTIALS_FILE.read_text()) == again


def test_bootstrap_does_not_bring_back_an_admin_account_an_operator_deleted(bootstrap):
    first, _ = bootstrap()
    assert "password:" in first
    services.delete_user(user=User.objects.get(username="admin"), actor="user:olivia")

    # Was a new superuser `admin`, its password printed into the service's log, at every start.
    again, _ = bootstrap()
    assert "password" not in again
    assert (
        "The admin account was deleted in the console: not created again (manage.py createsuperuser" in again
    )
    assert not User.objects.filter(username="admin").exists()


def test_bootstrap_does_not_make_a_second_admin_account_after_an_operator_renamed_it(bootstrap):
    bootstrap()
    User.objects.filter(username="admin").update(username="olivia")  # as the console's user page saves it

    # Was a second superuser `admin`, its password printed into the service's log.
    again, _ = bootstrap()
    assert "password" not in again
    assert "No account is named admin, but a superuser exists (olivia): not created again" in again
    assert list(User.objects.filter(is_superuser=True).values_list("username", flat=True)) == ["olivia"]


def test_bootstrap_leaves_a_deactivated_admin_account_so(bootstrap):
    bootstrap()
    services.set_user_active(user=User.objects.get(username="admin"), active=False, actor="user:olivia")

    again, errors = bootstrap()
    assert "password" not in again + errors
    assert not User.objects.get(username="admin").is_active


def test_bootstrap_says_a_changed_admin_password_is_not_applied(bootstrap, settings):
    settings.ADMIN_PASSWORD = "the first long password"
    bootstrap()
    settings.ADMIN_PASSWORD = "a second long password"

    # Was silence: the operator believed the new password set.
    _, errors = bootstrap()
    assert errors == (
        "Note: ADMIN_PASSWORD is not the admin account's password, and bootstrap sets it only when it "
        "creates the account: it is left as it is (manage.py changepassword admin changes it).\n"
    )
    assert "second" not in errors
    admin = User.objects.get(username="admin")
    assert admin.check_password("the first long password")
    settings.ADMIN_PASSWORD = "the first long password"
    assert bootstrap()[1] == ""


@pytest.mark.parametrize("password", ["admin", "12345678", "password1"])
def test_bootstrap_refuses_an_admin_password_the_console_would_refuse(bootstrap, settings, password):
    # Was a superuser with the password "admin": the console's own password forms refuse it.
    settings.ADMIN_PASSWORD = password
    with pytest.raises(CommandError, match=r"^ADMIN_PASSWORD: .*unset it for a generated one") as refused:
        bootstrap()
    assert password not in str(refused.value)
    assert not User.objects.filter(username="admin").exists()


def test_bootstrap_seeds_a_scope_once_not_again_after_an_operator_deleted_or_renamed_it(bootstrap):
    Scope.objects.filter(name="orders:read").delete()  # never seeded here: bootstrap seeds it
    services.delete_scope(scope=Scope.objects.get(name="orders:write"), actor="user:olivia")
    introspection = Scope.objects.get(name="introspection")
    introspection.name = "token-introspection"
    services.save_scope(scope=introspection, changed_fields=["name"], actor="user:olivia")

    output, _ = bootstrap()

    # Was both back at every start, orders:write as a sandbox-free scope nobody asked for again.
    assert "Seeded the scopes orders:read." in output
    assert sorted(Scope.objects.values_list("name", flat=True)) == [
        "orders:read", "products:read", "registration", "token-introspection",
    ]  # fmt: skip
    renamed = AuditEvent.objects.get(kind=AuditEvent.Kind.SCOPE_CHANGED)
    assert renamed.detail["renamed_from"] == "introspection"
    assert "Seeded" not in bootstrap()[0]
