"""An HTTP session that trusts exactly the kubeconfig's CA and presents its client certificate, from memory.

Why: requests takes a CA bundle and a client key as file paths. Here the CA is loaded from memory into an
`ssl.SSLContext`, so only that CA is trusted (not the system bundle); the client key must pass through a file for
`load_cert_chain`, so it is written to a private temporary directory (0700/0600), loaded, and removed at once. The
session ignores proxy variables and ~/.netrc (trust_env off): nothing from the environment may redirect the
credentials or replace the Authorization header.
"""

from __future__ import annotations

import os
import shutil
import ssl
import tempfile
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from hooks.target.kubeconfig import TargetConfig


class _ContextAdapter(HTTPAdapter):
    """Uses one SSLContext for every connection and keeps requests from loading its own CA bundle into it."""

    def __init__(self, context: ssl.SSLContext, server_hostname: str | None) -> None:
        self._context = context
        self._server_hostname = server_hostname
        super().__init__(max_retries=0)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        pool_kwargs["ssl_context"] = self._context
        if self._server_hostname:
            pool_kwargs["server_hostname"] = self._server_hostname
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        """Trust and identity live in the context; verification stays on (CERT_REQUIRED, hostname checked)."""
        conn.cert_reqs = "CERT_REQUIRED"
        conn.ca_certs = None
        conn.ca_cert_dir = None


def ssl_context(config: TargetConfig) -> ssl.SSLContext:
    """Verifying context: the kubeconfig's CA only (the system store when it names none), its client cert."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=config.ca_data.decode()
                                         if config.ca_data else None)
    if config.ca_data is None:
        context.load_default_certs()
    if config.client_cert and config.client_key:
        directory = tempfile.mkdtemp(prefix="target-tls-")
        try:
            cert, key = os.path.join(directory, "tls.crt"), os.path.join(directory, "tls.key")
            for path, blob in ((cert, config.client_cert), (key, config.client_key)):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as handle:
                    handle.write(blob)
            context.load_cert_chain(cert, key)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    return context


def session_for(config: TargetConfig) -> requests.Session:
    """A session for the target API; https verified by the context, http only as the kubeconfig allowed it."""
    session = requests.Session()
    session.trust_env = False
    if config.server.startswith("https://"):
        session.mount("https://", _ContextAdapter(ssl_context(config), config.tls_server_name))
    return session
