# Hook server image: gunicorn + Flask on Python 3.11, non-root, ready for a read-only root filesystem.
# Build: make image (docker, podman or buildah; tagged hooks.__version__)   Run: docker run --read-only --tmpfs /tmp -p 8080:8080 metal-machine-hooks

# -- builder: resolve the pinned requirements into a virtualenv (every pin ships a wheel: no compiler needed) --------
FROM python:3.11.14-slim-bookworm AS builder

# pip compiles the installed packages' .pyc files here, at build time.
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

RUN python -m venv /opt/venv

# Requirements alone first, so a code change reuses the dependency layer. requirements.lock pins every runtime
# package, direct or transitive, with its hashes (`make lock`): a changed or substituted file fails the build.
COPY requirements.lock /tmp/requirements.lock
RUN /opt/venv/bin/pip install --no-cache-dir --only-binary=:all: --require-hashes --no-deps -r /tmp/requirements.lock

# -- runtime: the same base, the venv and the product files only ----------------------------------------------------
FROM python:3.11.14-slim-bookworm

LABEL org.opencontainers.image.title="metal-machine-hooks" \
      org.opencontainers.image.description="Metacontroller hooks that run Equinix Metal machines for Gardener MCM's Machine API"

# Fixed IDs so Kubernetes' runAsUser/runAsGroup (10001) match the files' owner; no home, no login shell.
RUN groupadd --gid 10001 hooks \
    && useradd --no-log-init --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin hooks

# Nothing is written at run time outside /tmp (an emptyDir) and /dev/shm: no .pyc files, unbuffered logs.
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PORT=8080

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
COPY requirements.lock gunicorn.conf.py ./
COPY hooks/ ./hooks/
# The drain Jobs run `python -m drain NODE` from this same image (working directory /app).
COPY drain/ ./drain/
# The Node-side Jobs (bootstrap tokens, Node labels/taints/removal) run `python -m nodejobs ...` from it too.
COPY nodejobs/ ./nodejobs/
# Compiled once at build time (as root, read-only afterwards), since the running container cannot write them.
RUN python -m compileall -q /app/hooks /app/drain /app/nodejobs /app/gunicorn.conf.py

USER 10001:10001
EXPOSE 8080

# gunicorn stops gracefully on SIGTERM (graceful_timeout in gunicorn.conf.py), which is Kubernetes' stop signal.
CMD ["gunicorn", "-c", "gunicorn.conf.py", "hooks.app:create_app()"]
