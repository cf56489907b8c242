"""Real clients against a real server: requests-oauthlib, threads, curl, over HTTPS from gunicorn."""

import json
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from oauthlib.oauth2 import BackendApplicationClient
from requests.auth import HTTPBasicAuth
from requests_oauthlib import OAuth2Session

from tests.helpers import make_client
from tests.servers import LiveServer

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock(), LiveServer(workers=4) as live:
        yield live


def test_requests_oauthlib_backend_application_client_gets_a_token(server, transactional_db):
    new_client = make_client(scopes=["products:read"])
    application = new_client.application
    session = OAuth2Session(client=BackendApplicationClient(client_id=application.client_id))

    token = session.fetch_token(
        token_url=f"{server.url}/oauth2/token",
        auth=HTTPBasicAuth(application.client_id, new_client.client_secret),
        verify=server.verify,
    )

    assert token["token_type"] == "Bearer"
    assert token["scope"] == ["products:read"]
    assert token["expires_in"] == 3600


def test_requests_oauthlib_with_client_secret_post(server, transactional_db):
    new_client = make_client()
    application = new_client.application
    session = OAuth2Session(client=BackendApplicationClient(client_id=application.client_id))

    token = session.fetch_token(
        token_url=f"{server.url}/oauth2/token",
        client_id=application.client_id,
        client_secret=new_client.client_secret,
        include_client_id=True,
        verify=server.verify,
    )
    assert token["access_token"]


def test_sixteen_threads_get_distinct_tokens_from_a_multi_worker_server(server, transactional_db):
    new_client = make_client()
    credentials = (new_client.application.client_id, new_client.client_secret)

    def request_token(_):
        response = requests.post(
            f"{server.url}/oauth2/token",
            data={"grant_type": "client_credentials"},
            auth=credentials,
            verify=server.verify,
            timeout=30,
        )
        return response.status_code, response.json().get("access_token")

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(request_token, range(160)))

    assert [status for status, _ in results] == [200] * 160, server.output()
    assert len({token for _, token in results}) == 160
    assert "database is locked" not in server.output()


def test_revoke_then_introspect_over_https(server, transactional_db):
    resource_server = make_client(scopes=["introspection"], name="resource server")
    new_client = make_client()
    credentials = (new_client.application.client_id, new_client.client_secret)
    token = requests.post(
        f"{server.url}/oauth2/token",
        data={"grant_type": "client_credentials"},
        auth=credentials,
        verify=server.verify,
        timeout=30,
    ).json()["access_token"]

    def introspect():
        return requests.post(
            f"{server.url}/oauth2/introspect",
            data={"token": token},
            auth=(resource_server.application.client_id, resource_server.client_secret),
            verify=server.verify,
            timeout=30,
        ).json()

    assert introspect()["active"] is True
    revoked = requests.post(
        f"{server.url}/oauth2/revoke",
        data={"token": token},
        auth=credentials,
        verify=server.verify,
        timeout=30,
    )
    assert revoked.status_code == 200
    assert introspect() == {"active": False}


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_with_the_seed_command(server, transactional_db):
    new_client = make_client()
    command = [
        "curl", "--silent", "--show-error", "--user",
        f"{new_client.application.client_id}:{new_client.client_secret}", "-k",
        "-d", "grant_type=client_credentials", "-H", "Content-Type: application/x-www-form-urlencoded",
        f"{server.url}/oauth2/token",
    ]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, timeout=30, check=True)
    assert json.loads(completed.stdout)["token_type"] == "Bearer"
