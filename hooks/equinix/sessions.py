"""Keep-alive HTTP sessions to the Metal API: one per worker thread, reused by every hook call on that thread.

Why (measured by `make bench`, see README "Performance"): a fresh requests.Session per hook call opened a new TCP
connection (a TLS handshake against the real API) for every sync, and a session that trusts the environment
re-reads every environment variable for proxy settings and looks for a ~/.netrc on every request. Together that
was most of what a steady-state sync cost beyond its one API call.

The environment is still honoured, read once per session: HTTPS_PROXY/HTTP_PROXY/NO_PROXY for the API URL and
REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE. The API token is never stored in a session (the client sends it per request),
and cookies are refused so that nothing one token's answers set is sent along with another token's requests.
Per thread, not shared: requests.Session is not documented as thread-safe, and gunicorn's gthread workers run
each call on one thread from start to end.

A kept-alive connection the API closed while idle is noticed before reuse (urllib3 checks it) and replaced. In
the rare race where the API closes it just as a create is sent, the create fails as a transport error; the Machine
hooks treat that as an unknown outcome and look the device up by tag before creating again, so it costs a
retry a few seconds later, never a duplicate device.
"""

from __future__ import annotations

import http.cookiejar
import os
import threading

import requests
import requests.utils

_local = threading.local()


def thread_session(base_url: str) -> requests.Session:
    """This thread's session for the API at `base_url` (created on first use)."""
    sessions: dict[str, requests.Session] | None = getattr(_local, "sessions", None)
    if sessions is None:
        sessions = _local.sessions = {}
    session = sessions.get(base_url)
    if session is None:
        session = sessions[base_url] = new_session(base_url)
    return session


def new_session(base_url: str) -> requests.Session:
    session = requests.Session()
    session.proxies.update(requests.utils.get_environ_proxies(base_url))
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle
    session.trust_env = False  # the environment was read above, once
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    return session
