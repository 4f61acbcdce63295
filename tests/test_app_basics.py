"""The hook server answers health checks and refuses bodies that are not JSON objects with a JSON 400."""

from hooks.config import Settings
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
