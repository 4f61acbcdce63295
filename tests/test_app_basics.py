"""The hook server answers health checks and refuses bodies that are not JSON objects with a JSON 400."""

from datetime import UTC, datetime

import pytest

from hooks.config import ConfigError, DrainSettings, Settings
from hooks.context import Runtime
from hooks.server.app import create_app


def test_healthz_and_readyz() -> None:
    client = create_app(Settings()).test_client()
    assert client.get("/healthz").json == {"status": "ok"}
    assert client.get("/readyz").status_code == 200


def test_readyz_reports_bad_configuration(monkeypatch) -> None:
    monkeypatch.setenv("METAL_API_URL", "ftp://nowhere")
    response = create_app().test_client().get("/readyz")
    assert response.status_code == 503
    assert "METAL_API_URL" in response.json["error"]


def _refused_at_start_up(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    """Settings refuse the value, naming the variable, and the app's /readyz says 503 with the same name."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env()
    response = create_app().test_client().get("/readyz")
    assert response.status_code == 503
    assert variable in response.json["error"]


@pytest.mark.parametrize("variable,value", [("DRAIN_SERVICE_ACCOUNT", "Not A Name"), ("DRAIN_ENABLED", "maybe"),
                                            ("DRAIN_IMAGE", "a b")])
def test_bad_drain_settings_are_refused_at_start_up(monkeypatch, variable: str, value: str) -> None:
    """Drain settings are read once with the rest: a bad one keeps the pod unready instead of failing each finalize."""
    _refused_at_start_up(monkeypatch, variable, value)


@pytest.mark.parametrize("variable,value", [("NODE_JOBS_SERVICE_ACCOUNT", "Not A Name"),
                                            ("BOOTSTRAP_TOKEN_SERVICE_ACCOUNT", "x_y"), ("NODE_JOBS_IMAGE", "a b"),
                                            ("BOOTSTRAP_TOKEN_AUTH_EXTRA_GROUPS", "system:masters")])
def test_bad_node_job_settings_are_refused_at_start_up(monkeypatch, variable: str, value: str) -> None:
    """The Node-side Job settings (docs/nodes.md) are read once with the rest: a bad one keeps the pod unready."""
    _refused_at_start_up(monkeypatch, variable, value)


def test_node_job_settings_are_part_of_the_settings() -> None:
    settings = Settings.from_env({"DRAIN_IMAGE": "r.example/x:9", "NODE_JOBS_SERVICE_ACCOUNT": "n",
                                  "BOOTSTRAP_TOKEN_AUTH_EXTRA_GROUPS": "system:bootstrappers:workers",
                                  "BOOTSTRAP_TOKEN_KEY_FILE": "/keys/key"})
    jobs = settings.node_jobs
    assert (jobs.image, jobs.node_account, jobs.token.extra_groups, jobs.token.key_file) == (
        "r.example/x:9", "n", "system:bootstrappers:workers", "/keys/key")
    assert Settings.from_env({"NODE_JOBS_IMAGE": "r.example/n:1", "DRAIN_IMAGE": "r.example/x:9"}).node_jobs.image \
        == "r.example/n:1"


def test_drain_settings_are_part_of_the_settings() -> None:
    settings = Settings.from_env({"DRAIN_ENABLED": "false", "DRAIN_IMAGE": "r.example/x:9",
                                  "DRAIN_SERVICE_ACCOUNT": "d", "MACHINE_DRAIN_TIMEOUT": "600"})
    assert (settings.drain.enabled, settings.drain.image, settings.drain.service_account, settings.drain.timeout) == (
        False, "r.example/x:9", "d", 600.0)
    assert Settings.from_env({}).drain == DrainSettings()
    assert not Settings.from_env({"NO_TARGET_CLUSTER": "true"}).drain.enabled  # no Nodes to drain, as in MCM


def test_each_app_keeps_its_own_typed_runtime_state() -> None:
    """The class scan clock lives in the app's Runtime: a second app (a restarted worker) scans afresh."""
    first, second = create_app(Settings()), create_app(Settings())
    runtime = first.extensions["hook_context"].runtime
    assert isinstance(runtime, Runtime) and runtime.scan_times == {}
    runtime.scan_times["class-uid"] = datetime(2026, 12, 3, tzinfo=UTC)
    assert second.extensions["hook_context"].runtime.scan_times == {}
