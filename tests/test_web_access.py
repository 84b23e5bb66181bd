"""Who may query a worker and where a query may be forwarded (``ves_streams.web_access``), and where it listens."""

from __future__ import annotations

import socket

import pytest

from ves_streams.secret import Secret
from ves_streams.settings import Settings
from ves_streams.web_access import bearer_matches, forward_headers, forwardable


def test_only_the_exact_bearer_token_matches_and_no_token_asks_nothing() -> None:
    token = Secret("web-t0ken")
    assert bearer_matches(token, "Bearer web-t0ken")
    for header in (None, "", "web-t0ken", "Bearer web-t0ke", "Bearer web-t0ken2", "Basic web-t0ken"):
        assert not bearer_matches(token, header)
    assert bearer_matches(None, None)
    assert forward_headers(token) == {"Authorization": "Bearer web-t0ken"} and forward_headers(None) == {}


@pytest.mark.parametrize("url", ["http://10.0.3.12:6066", "https://worker-1.ves-streams:6066/", "http://[::1]:6066"])
def test_a_plain_announced_url_is_forwardable(url: str) -> None:
    assert forwardable(url)


@pytest.mark.parametrize(
    "url",
    ["http://10.0.3.12", "ftp://10.0.3.12:6066", "http://user:pw@10.0.3.12:6066", "http://10.0.3.12:6066/admin",
     "http://10.0.3.12:6066?x=1", "http://:6066", "http://10.0.3.12:99999", "not a url"],
)  # fmt: skip
def test_a_url_a_member_could_smuggle_something_into_is_not(url: str) -> None:
    assert not forwardable(url)


def test_the_web_server_listens_where_the_worker_is_reached_not_on_every_interface() -> None:
    assert Settings.from_env({"VES_STREAMS_WEB_BIND": "0.0.0.0"}).web_bind_address() == "0.0.0.0"  # said explicitly
    assert Settings.from_env({"VES_STREAMS_WEB_HOST": "10.1.2.3"}).web_bind_address() == "10.1.2.3"  # the pod's IP
    assert Settings.from_env({}).web_bind_address() == socket.gethostbyname(socket.gethostname())
    unresolvable = Settings.from_env({"VES_STREAMS_WEB_HOST": "no-such-host.invalid"})
    assert unresolvable.web_bind_address() == "127.0.0.1"


def test_the_web_token_is_a_secret() -> None:
    settings = Settings.from_env({"VES_STREAMS_WEB_TOKEN": "web-hunter2"})
    assert settings.web_token is not None and settings.web_token.reveal() == "web-hunter2"
    assert "web-hunter2" not in repr(settings) + str(settings)
