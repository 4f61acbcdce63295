"""Kept-alive Metal API sessions: one per worker thread, the environment's proxy settings read once, no cookies."""

from __future__ import annotations

import threading

import pytest
import requests
import requests.cookies

from hooks.equinix import sessions
from hooks.equinix.client import MetalClient


def test_one_session_per_thread_and_api_url() -> None:
    first = sessions.thread_session("https://api.example/metal/v1")
    assert sessions.thread_session("https://api.example/metal/v1") is first
    assert sessions.thread_session("http://127.0.0.1:1/metal/v1") is not first
    other: list[object] = []
    thread = threading.Thread(target=lambda: other.append(sessions.thread_session("https://api.example/metal/v1")))
    thread.start()
    thread.join()
    assert other and other[0] is not first


def test_proxy_and_ca_bundle_from_the_environment_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/corp.pem")
    api = sessions.new_session("https://api.equinix.com/metal/v1")
    assert api.proxies.get("https") == "http://proxy.internal:3128"
    assert api.verify == "/etc/ssl/corp.pem"
    assert not api.trust_env  # read once here, not on every request
    assert sessions.new_session("http://127.0.0.1:8090/metal/v1").proxies == {}  # NO_PROXY honoured


def test_connections_are_reused_and_cookies_refused(metal_sim) -> None:
    session = sessions.new_session(metal_sim.url)
    client = MetalClient(metal_sim.token, base_url=metal_sim.url, session=session)
    for _ in range(3):
        client.list_devices(metal_sim.project)
    pools = session.get_adapter(metal_sim.url).poolmanager.pools
    (key,) = pools.keys()
    conn_pool = pools[key]
    assert conn_pool.num_connections == 1 and conn_pool.num_requests == 3

    # A cookie an API answer (or a load balancer in front of it) tries to set is not kept.
    cookie = requests.cookies.create_cookie("affinity", "x", domain="127.0.0.1")
    request = requests.cookies.MockRequest(requests.Request("GET", metal_sim.url).prepare())
    session.cookies.set_cookie_if_ok(cookie, request)
    assert len(session.cookies) == 0
