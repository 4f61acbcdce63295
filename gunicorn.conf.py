"""gunicorn settings for the hook server, all overridable from the environment.

Run: gunicorn -c gunicorn.conf.py "hooks.app:create_app()"   (what the image and `make run` do)

Environment:
  BIND                  listen address(es), e.g. "127.0.0.1:8080" or "[::]:8080"; several separated by commas.
                        Default: 0.0.0.0:$PORT.
  PORT                  port for the default bind (8080).
  GUNICORN_WORKERS      worker processes (2).
  GUNICORN_THREADS      threads per worker (8).
  GUNICORN_TIMEOUT      seconds before a silent worker is killed and replaced (9).
  GUNICORN_GRACEFUL_TIMEOUT      seconds in-flight calls get to finish after SIGTERM (25).
  GUNICORN_KEEPALIVE    seconds an idle keep-alive connection stays open (120).
  REQUEST_READ_TIMEOUT  seconds a request (headers and body) may take to arrive once awaited (10).
  GUNICORN_ACCESS_LOG   "false" turns the per-request access log off (on by default).
  LOG_LEVEL             DEBUG, INFO (default), WARNING, ERROR.
  TLS_CERT_FILE, TLS_KEY_FILE    serve HTTPS with this PEM certificate chain and key (both or neither).
  PROMETHEUS_MULTIPROC_DIR       where workers keep metric values for /metrics; default a fresh dir under /tmp.

Sizing: each Metacontroller controller runs 5 workers (--workers) and we have 4 controllers (machines,
machineclasses, machinesets, machinedeployments), so up to 20 hook calls can arrive at once, plus customize calls.
2 workers x 8 threads = 16 concurrent calls per pod; the Deployment runs 2 replicas (32), which also keeps the hooks
reachable while one pod restarts. Hook calls wait mostly on the Metal API, so threads (gthread) are the cheap way to
get concurrency; two processes keep one stuck interpreter from stopping everything.

Coupled to the controllers and the Deployment (tests/test_server.py checks these stay consistent):
- The webhooks in metacontroller/*.yaml have `timeout: 10s`, or 30s for hooks that may create or delete devices.
  After that Metacontroller has given up on the call.
- The worker timeout (9 s) is below the shortest webhook timeout. With gthread it is a heartbeat of the worker's
  main loop: it catches a wedged process and never cuts a slow request short; a request is bounded by the Metal
  client's connect/read timeouts and retry budget (METAL_RETRY_BUDGET, 6 s).
- graceful_timeout (25 s) lets an in-flight create finish on SIGTERM, and stays below the pod's
  terminationGracePeriodSeconds (30) so gunicorn exits before the kubelet kills it.
"""

from __future__ import annotations

import glob
import os
import shutil
import sys
import tempfile


def _int_env(name: str, default: int, minimum: int = 1) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        sys.exit(f"gunicorn.conf.py: {name}={raw!r} is not an integer")
    if value < minimum:
        sys.exit(f"gunicorn.conf.py: {name}={raw!r} must be at least {minimum}")
    return value


def _bool_env(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    sys.exit(f"gunicorn.conf.py: {name}={raw!r} is not a boolean (use true or false)")


# -- where to listen ------------------------------------------------------------------------------------------
_port = _int_env("PORT", 8080, minimum=0)
bind = [b.strip() for b in os.environ.get("BIND", "").replace(" ", ",").split(",") if b.strip()] or [f"0.0.0.0:{_port}"]
# Behind a Kubernetes Service the peer is kube-proxy or the node: trust X-Forwarded-* from nobody by default.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")

_cert, _key = os.environ.get("TLS_CERT_FILE", "").strip(), os.environ.get("TLS_KEY_FILE", "").strip()
if bool(_cert) != bool(_key):
    sys.exit("gunicorn.conf.py: set both TLS_CERT_FILE and TLS_KEY_FILE to serve HTTPS, or neither")
if _cert:
    for _name, _path in (("TLS_CERT_FILE", _cert), ("TLS_KEY_FILE", _key)):
        if not os.path.isfile(_path):
            sys.exit(f"gunicorn.conf.py: {_name}={_path!r} is not a readable file")
    certfile, keyfile = _cert, _key  # Python's defaults for a server context: TLS 1.2 or newer

# -- concurrency and time limits ------------------------------------------------------------------------------
# gthread with a deadline on reading each request (hooks/server/worker.py): slow clients cannot hold threads.
worker_class = "hooks.server.worker.BoundedReadWorker"
workers = _int_env("GUNICORN_WORKERS", 2)
threads = _int_env("GUNICORN_THREADS", 8)
timeout = _int_env("GUNICORN_TIMEOUT", 9)
# On SIGTERM: stop accepting, let in-flight calls finish (a device create may take most of its 30 s webhook timeout).
graceful_timeout = _int_env("GUNICORN_GRACEFUL_TIMEOUT", 25)
# Longer than Go's default idle-connection timeout (90 s), so Metacontroller, not we, closes idle connections and
# never sends a request on a connection we are closing at that instant (a POST would not be retried).
keepalive = _int_env("GUNICORN_KEEPALIVE", 120)
# Application code is imported in each worker, after the fork (prometheus multiprocess mode relies on it).
preload_app = False

# -- request limits (the body limit is Flask's MAX_CONTENT_LENGTH in hooks/app.py, answered with a JSON 413) ----
limit_request_line = 4094
limit_request_fields = 50
limit_request_field_size = 8190

# -- read-only root filesystem: nothing but /tmp (or /dev/shm) is written ----------------------------------------
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()

_created_metrics_dir = ""
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _created_metrics_dir = tempfile.mkdtemp(prefix="metal-machine-hooks-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _created_metrics_dir
os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
# Imported now, after the variable is set: child_exit runs inside a SIGCHLD handler, where a first import can be
# interrupted by the next worker's exit and re-entered half-done.
from prometheus_client import multiprocess  # noqa: E402

# -- logging: JSON lines on stderr, secrets scrubbed (hooks/server/logs.py); access lines name no query string or body
loglevel = os.environ.get("LOG_LEVEL", "info").strip().lower() or "info"
errorlog = "-"
accesslog = "-" if _bool_env("GUNICORN_ACCESS_LOG", True) else None
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms request_id=%({x-request-id}o)s'
_log_level = loglevel.upper() if loglevel.upper() in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL") else "INFO"
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "hooks.server.logs.JsonFormatter"}},
    "filters": {"redact": {"()": "hooks.server.logs.RedactingFilter"}},
    "handlers": {
        "stderr": {"class": "hooks.server.logs.StderrHandler", "formatter": "json", "filters": ["redact"]},
    },
    "root": {"level": _log_level, "handlers": ["stderr"]},
    "loggers": {
        "gunicorn.error": {"level": _log_level, "handlers": ["stderr"], "propagate": False},
        "gunicorn.access": {
            "level": "INFO" if accesslog else "WARNING",
            "handlers": ["stderr"],
            "propagate": False,
        },
    },
}


def on_starting(server: object) -> None:
    """Values left by an earlier run in a reused metrics dir would be summed into ours: start empty."""
    for path in glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], "*.db")):
        os.remove(path)


def child_exit(server: object, worker: object) -> None:
    """A dead worker's live gauges must not linger in /metrics (its counters stay in the sums)."""
    multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined]


def on_exit(server: object) -> None:
    if _created_metrics_dir:
        shutil.rmtree(_created_metrics_dir, ignore_errors=True)
