"""Load balancers ask GET /healthz (process up) and GET /readyz (database reachable)."""

import pytest
from django.db import OperationalError, connection
from django.db.migrations.recorder import MigrationRecorder

from authserver.views import ReadinessView


def test_healthz_answers_without_the_database(client, db, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_checks_the_database(client, db):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["database"] == "ok"


def test_readyz_is_503_when_the_database_does_not_answer(client, db, monkeypatch):
    def unreachable(*args, **kwargs):
        raise OperationalError("connection refused")

    with monkeypatch.context() as patched:
        patched.setattr(connection, "cursor", unreachable)
        response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["error"] == "temporarily_unavailable"
    assert response["Retry-After"]


def test_readyz_is_503_while_a_migration_is_not_applied(client, db, monkeypatch):
    # A new node (or new code) before `manage.py migrate`: the database answers, but every request
    # that needs a missing table failed while the load balancer was told to send traffic.
    monkeypatch.setattr(ReadinessView, "schema_ready", False)
    MigrationRecorder.Migration.objects.filter(app="authserver").order_by("-id").first().delete()

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["error"] == "temporarily_unavailable"
    assert "manage.py migrate" in response.json()["error_description"]
    assert response["Retry-After"]


def test_readyz_reads_the_migrations_until_they_are_all_applied(
    client, db, monkeypatch, django_assert_num_queries
):
    monkeypatch.setattr(ReadinessView, "schema_ready", False)
    assert client.get("/readyz").status_code == 200
    # Then only whether the database answers: schemas do not go back.
    with django_assert_num_queries(1):
        assert client.get("/readyz").status_code == 200


@pytest.mark.parametrize(("path", "status"), [("/healthz/", "ok"), ("/readyz/", "ready")])
def test_the_probes_answer_with_a_trailing_slash_too(client, db, path, status):
    # Was a 404: a load balancer configured with the slash took every node out of service.
    response = client.get(path)
    assert response.status_code == 200
    assert response.json()["status"] == status
    assert client.options(path).status_code == 204


def test_unknown_machine_paths_are_json_404(client, db):
    response = client.get("/oauth2/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


@pytest.mark.parametrize(
    "path", ["//api/v1/products", "//oauth2/token", "///.well-known/oauth-authorization-server"]
)
def test_a_machine_path_after_a_doubled_slash_is_a_json_404(client, db, path):
    # What a client whose base URL ends in a slash asks for: the HTML page was the answer.
    response = client.get("/", PATH_INFO=path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"] == "not_found"
