"""The Metal client against a mocked API: pagination, error mapping, retries, and secrets kept out of sight."""

from __future__ import annotations

import logging
import random
import socket
import struct
import threading

import pytest
import requests

from hooks import __version__
from hooks.equinix.client import ApiCall, DeviceCreate, MetalClient, RateLimit
from hooks.equinix.errors import (
    CapacityError,
    Forbidden,
    MetalError,
    NotFound,
    RateLimited,
    ServerError,
    TransportError,
    Unauthorized,
    UnexpectedResponse,
    Unprocessable,
)
from hooks.redact import redact
from tests.clocks import SleepClock

BASE = "http://metal.test/metal/v1"
PROJECT = "4f2b3c1e-0d4a-4b8e-9a51-2f6c0e7d9a10"
DEVICE = "9c1d2e3f-4a5b-4c6d-8e7f-0a1b2c3d4e5f"
TOKEN = "s3cr3t-api-token-do-not-leak"
USERDATA = "#cloud-config\nwrite_files:\n- content: bootstrap-token-abcdef0123456789\n  path: /etc/kubeadm\n"
API = {"Content-Type": "application/json", "X-Request-Id": "req-123"}


@pytest.fixture
def clock() -> SleepClock:
    return SleepClock(start=100.0)


@pytest.fixture
def calls() -> list[ApiCall]:
    return []


@pytest.fixture
def client(clock: SleepClock, calls: list[ApiCall]) -> MetalClient:
    return MetalClient(
        TOKEN,
        base_url=BASE + "/",
        connect_timeout=2.0,
        read_timeout=7.0,
        sleep=clock.sleep,
        monotonic=clock.monotonic,
        rng=random.Random(1),
        observer=calls.append,
    )


def device(n: int) -> dict:
    return {"id": f"dev-{n:03d}", "hostname": f"host-{n}", "state": "active", "tags": ["t"]}


def paged(items: list[dict], key: str, size: int, *, with_next: bool = True):
    """A requests-mock callback serving `items` in pages of `size`, the way the API fills in `meta`."""

    def respond(request, context) -> dict:
        page = int(request.qs.get("page", ["1"])[0])
        last = max(1, -(-len(items) // size))
        meta = {"current_page": page, "last_page": last, "total": len(items)}
        if with_next and page < last:
            meta["next"] = {"href": f"/metal/v1/projects/{PROJECT}/x?page={page + 1}&per_page={size}"}
        context.headers.update(API)
        return {key: items[(page - 1) * size : page * size], "meta": meta}

    return respond


# -- pagination ----------------------------------------------------------------------------------------------


def test_list_devices_reads_every_page_through_meta_next(client, requests_mock):
    items = [device(n) for n in range(25)]
    requests_mock.get(f"{BASE}/projects/{PROJECT}/devices", json=paged(items, "devices", 10))

    found = client.list_devices(PROJECT, tag="metal-machine-hooks:uid:abc", per_page=10)

    assert [d["id"] for d in found] == [d["id"] for d in items]
    assert requests_mock.call_count == 3
    sent = [r.qs for r in requests_mock.request_history]
    assert [q["page"] for q in sent] == [["1"], ["2"], ["3"]]
    assert all(q["per_page"] == ["10"] and q["tag"] == ["metal-machine-hooks:uid:abc"] for q in sent)
    assert all(q["include"] == ["metro"] for q in sent)


def test_list_follows_last_page_when_there_is_no_next_link(client, requests_mock):
    items = [device(n) for n in range(25)]
    requests_mock.get(f"{BASE}/projects/{PROJECT}/devices", json=paged(items, "devices", 10, with_next=False))

    assert len(client.list_devices(PROJECT, per_page=10)) == 25
    assert requests_mock.call_count == 3


def test_list_survives_a_server_that_ignores_per_page(client, requests_mock):
    items = [device(n) for n in range(25)]
    # We ask for 100 per page; the server answers 10 per page and says so in meta.
    requests_mock.get(f"{BASE}/projects/{PROJECT}/devices", json=paged(items, "devices", 10))

    assert len(client.list_devices(PROJECT, per_page=100)) == 25
    assert requests_mock.request_history[0].qs["per_page"] == ["100"]


def test_list_refuses_a_server_that_ignores_page(client, requests_mock):
    body = {"devices": [device(1), device(2)], "meta": {"next": {"href": "/metal/v1/x?page=2"}, "last_page": 9}}
    requests_mock.get(f"{BASE}/projects/{PROJECT}/devices", json=body, headers=API)

    with pytest.raises(UnexpectedResponse, match="ignore paging"):
        client.list_devices(PROJECT)
    assert requests_mock.call_count == 2


def test_list_reads_past_an_empty_page_when_meta_says_more_follow(client, requests_mock):
    pages = {1: [device(1)], 2: [], 3: [device(3)]}

    def respond(request, context) -> dict:
        page = int(request.qs["page"][0])
        meta = {"current_page": page, "last_page": 3, "total": 2}
        if page < 3:
            meta["next"] = {"href": f"/metal/v1/x?page={page + 1}"}
        return {"devices": pages[page], "meta": meta}

    requests_mock.get(f"{BASE}/projects/{PROJECT}/devices", json=respond, headers=API)

    assert [d["id"] for d in client.list_devices(PROJECT)] == [device(1)["id"], device(3)["id"]]


def test_list_reads_again_when_a_device_slipped_between_pages(client, requests_mock):
    """A device deleted while we read shifts another one onto a page we already read; the total tells."""
    items = [device(n) for n in range(12)]
    reads: list[int] = []

    def respond(request, context) -> dict:
        page = int(request.qs["page"][0])
        reads.append(page)
        current = items[1:] if len(reads) >= 2 else items  # device 0 is deleted after the first page was read
        meta = {"current_page": page, "last_page": 2, "total": len(current)}
        if page == 1:
            meta["next"] = {"href": "/metal/v1/x?page=2"}
        return {"devices": current[(page - 1) * 10 : page * 10], "meta": meta}

    requests_mock.get(f"{BASE}/projects/{PROJECT}/devices", json=respond, headers=API)

    found = client.list_devices(PROJECT, per_page=10)

    assert [d["id"] for d in found] == [d["id"] for d in items[1:]]
    assert reads == [1, 2, 1, 2]


def test_list_refuses_a_listing_that_never_matches_its_total(client, requests_mock):
    body = {"devices": [device(1)], "meta": {"current_page": 1, "last_page": 1, "total": 2}}
    requests_mock.get(f"{BASE}/projects/{PROJECT}/devices", json=body, headers=API)

    with pytest.raises(UnexpectedResponse, match="changed while it was read"):
        client.list_devices(PROJECT)
    assert requests_mock.call_count == 2


def test_list_refuses_a_next_link_that_loops_back(client, requests_mock):
    def respond(request, context) -> dict:
        page = int(request.qs["page"][0])
        return {"devices": [device(page)], "meta": {"next": {"href": "/metal/v1/x?page=1"}}}

    requests_mock.get(f"{BASE}/projects/{PROJECT}/devices", json=respond, headers=API)

    with pytest.raises(UnexpectedResponse, match="does not end"):
        client.list_devices(PROJECT)
    assert requests_mock.call_count == 1


# -- requests as sent ----------------------------------------------------------------------------------------


def test_headers_timeouts_and_base_url(client, requests_mock):
    requests_mock.get(f"{BASE}/devices/{DEVICE}", json={"id": DEVICE}, headers=API)

    client.get_device(DEVICE)

    sent = requests_mock.last_request
    assert sent.url.startswith(f"{BASE}/devices/{DEVICE}?")
    assert sent.headers["X-Auth-Token"] == TOKEN
    assert sent.headers["User-Agent"] == f"metal-machine-hooks/{__version__}"
    assert sent.headers["Accept"] == "application/json"
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.timeout == (2.0, 7.0)


def test_include_is_comma_joined_and_left_out_when_empty(client, requests_mock):
    requests_mock.get(f"{BASE}/devices/{DEVICE}", json={"id": DEVICE}, headers=API)

    client.get_device(DEVICE, include=("metro", "facility", "hardware_reservation"))
    assert requests_mock.last_request.qs["include"] == ["metro,facility,hardware_reservation"]

    client.get_device(DEVICE, include=())
    assert "include" not in requests_mock.last_request.qs


def test_create_body_has_exactly_the_given_fields(client, requests_mock):
    requests_mock.post(f"{BASE}/projects/{PROJECT}/devices", status_code=201, json={"id": DEVICE}, headers=API)
    request = DeviceCreate(
        metro="da",
        plan="c3.small.x86",
        operating_system="ubuntu_22_04",
        hostname="worker-1",
        tags=["metal-machine-hooks:managed"],
        hardware_reservation_id="next-available",
        always_pxe=False,
        userdata=USERDATA,
    )

    assert client.create_device(PROJECT, request) == {"id": DEVICE}

    sent = requests_mock.last_request
    assert sent.json() == {
        "metro": "da",
        "plan": "c3.small.x86",
        "operating_system": "ubuntu_22_04",
        "hostname": "worker-1",
        "tags": ["metal-machine-hooks:managed"],
        "hardware_reservation_id": "next-available",
        "always_pxe": False,
        "userdata": USERDATA,
    }
    assert sent.headers["Content-Type"] == "application/json"


def test_device_create_repr_hides_userdata_and_customdata():
    request = DeviceCreate(
        metro="da", plan="p", operating_system="os", userdata=USERDATA, customdata={"password": "hunter2-xyz"}
    )
    text = repr(request)
    assert "bootstrap-token" not in text and "hunter2" not in text
    assert "metro='da'" in text


def test_delete_sends_force_and_returns_on_204(client, requests_mock):
    requests_mock.delete(f"{BASE}/devices/{DEVICE}", status_code=204)

    assert client.delete_device(DEVICE) is None
    assert "force_delete" not in requests_mock.last_request.qs
    client.delete_device(DEVICE, force=True)
    assert requests_mock.last_request.qs["force_delete"] == ["true"]


def test_delete_of_a_missing_device_raises_not_found(client, requests_mock):
    requests_mock.delete(f"{BASE}/devices/{DEVICE}", status_code=404, json={"error": "Not found"}, headers=API)

    with pytest.raises(NotFound):
        client.delete_device(DEVICE)
    assert requests_mock.call_count == 1


def test_update_tags_puts_only_the_tags(client, requests_mock):
    requests_mock.put(f"{BASE}/devices/{DEVICE}", json={"id": DEVICE, "tags": ["a", "b"]}, headers=API)

    assert client.update_tags(DEVICE, ["a", "b"])["tags"] == ["a", "b"]
    assert requests_mock.last_request.json() == {"tags": ["a", "b"]}


def test_ids_are_path_segments_not_paths(client, requests_mock):
    requests_mock.get(f"{BASE}/devices/..%2Fprojects", json={"id": "x"}, headers=API)

    client.get_device("../projects")
    assert requests_mock.call_count == 1
    with pytest.raises(ValueError, match="device_id"):
        client.get_device("")


# -- error mapping -------------------------------------------------------------------------------------------


def test_403_is_forbidden_never_not_found_and_not_retried(client, requests_mock):
    requests_mock.get(
        f"{BASE}/devices/{DEVICE}",
        status_code=403,
        json={"error": "You are not authorized to view this device"},
        headers=API,
    )

    with pytest.raises(Forbidden) as caught:
        client.get_device(DEVICE)
    assert not isinstance(caught.value, NotFound)
    assert caught.value.status == 403 and caught.value.from_api
    assert requests_mock.call_count == 1
    assert str(caught.value) == (
        "get_device failed: HTTP 403: You are not authorized to view this device (request id req-123)"
    )


def test_403_that_says_rate_limit_is_rate_limited(client, requests_mock):
    requests_mock.get(
        f"{BASE}/devices/{DEVICE}",
        status_code=403,
        json={"errors": ["Rate limit exceeded, slow down"]},
        headers={**API, "Retry-After": "30"},
    )

    with pytest.raises(RateLimited) as caught:
        client.get_device(DEVICE)
    assert caught.value.retry_after == 30


def test_html_502_from_a_load_balancer_is_a_readable_server_error(client, requests_mock):
    page = (
        "<html><head><title>502 Bad Gateway</title><style>body{color:red}</style></head>"
        "<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center>" + "x" * 5000 + "</body></html>"
    )
    requests_mock.get(f"{BASE}/devices/{DEVICE}", status_code=502, text=page, headers={"Content-Type": "text/html"})

    with pytest.raises(ServerError) as caught:
        client.get_device(DEVICE)
    error = caught.value
    assert error.from_api is False and error.status == 502 and error.request_id is None
    assert "HTTP 502" in str(error) and "Bad Gateway" in str(error)
    assert "<" not in str(error) and len(str(error)) < 200
    assert requests_mock.call_count == client.max_attempts  # a 502 on a read is retried


def test_404_from_the_api_is_not_found(client, requests_mock):
    requests_mock.get(f"{BASE}/devices/{DEVICE}", status_code=404, json={"error": "Not found"}, headers=API)

    with pytest.raises(NotFound) as caught:
        client.get_device(DEVICE)
    assert caught.value.from_api and caught.value.request_id == "req-123"
    assert caught.value.messages == ["Not found"]
    assert "req-123" in str(caught.value)


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        ("<html><body><h1>404 Not Found</h1></body></html>", {"Content-Type": "text/html"}),
        ('{"error": "Not found"}', {"Content-Type": "application/json"}),  # JSON but no X-Request-Id
    ],
)
def test_404_from_an_intermediary_is_not_not_found(client, requests_mock, body, headers):
    requests_mock.get(f"{BASE}/devices/{DEVICE}", status_code=404, text=body, headers=headers)

    with pytest.raises(UnexpectedResponse) as caught:
        client.get_device(DEVICE)
    assert not isinstance(caught.value, NotFound)
    assert caught.value.from_api is False and caught.value.status == 404
    assert "not from the Metal API" in str(caught.value)


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (422, "The facility sjc1 has no provisionable t1.small.x86 servers matching your criteria"),
        (503, "There are no available hardware reservations for selected plan and facility"),
        (422, "Server is not provisionable"),
    ],
)
def test_capacity_messages_are_capacity_errors(client, requests_mock, status, message):
    requests_mock.post(
        f"{BASE}/projects/{PROJECT}/devices", status_code=status, json={"errors": [message]}, headers=API
    )

    with pytest.raises(CapacityError) as caught:
        client.create_device(PROJECT, DeviceCreate(metro="da", plan="p", operating_system="os"))
    assert caught.value.mcm_code == "ResourceExhausted" and caught.value.messages == [message]
    assert requests_mock.call_count == 1


def test_other_422_is_unprocessable_with_every_message(client, requests_mock):
    body = {"error": "Validation failed", "errors": ["plan is not valid", {"code": "x", "message": "bad metro"}, 7]}
    requests_mock.post(f"{BASE}/projects/{PROJECT}/devices", status_code=422, json=body, headers=API)

    with pytest.raises(Unprocessable) as caught:
        client.create_device(PROJECT, DeviceCreate(metro="da", plan="p", operating_system="os"))
    assert caught.value.messages == ["Validation failed", "plan is not valid", "x: bad metro", "7"]
    assert "Validation failed; plan is not valid; x: bad metro; 7" in str(caught.value)


def test_401_is_unauthorized(client, requests_mock):
    requests_mock.get(f"{BASE}/devices/{DEVICE}", status_code=401, json={"error": "Invalid token"}, headers=API)

    with pytest.raises(Unauthorized):
        client.get_device(DEVICE)
    assert requests_mock.call_count == 1


def test_redirect_is_not_followed(client, requests_mock):
    requests_mock.get(f"{BASE}/devices/{DEVICE}", status_code=302, headers={"Location": "http://elsewhere.test/"})

    with pytest.raises(UnexpectedResponse):
        client.get_device(DEVICE)
    assert [r.hostname for r in requests_mock.request_history] == ["metal.test"]


# -- retries -------------------------------------------------------------------------------------------------


def test_create_is_never_retried_after_a_503(client, requests_mock, clock):
    requests_mock.post(
        f"{BASE}/projects/{PROJECT}/devices", status_code=503, json={"error": "Service Unavailable"}, headers=API
    )

    with pytest.raises(ServerError) as caught:
        client.create_device(PROJECT, DeviceCreate(metro="da", plan="p", operating_system="os"))
    assert requests_mock.call_count == 1 and clock.sleeps == []
    assert "outcome is unknown" in str(caught.value)


def test_create_is_never_retried_after_a_timeout_or_a_truncated_answer(client, requests_mock):
    url = f"{BASE}/projects/{PROJECT}/devices"
    request = DeviceCreate(metro="da", plan="p", operating_system="os")
    requests_mock.post(url, exc=requests.exceptions.ReadTimeout)
    with pytest.raises(TransportError, match="no answer within 7 s"):
        client.create_device(PROJECT, request)
    assert requests_mock.call_count == 1

    requests_mock.post(url, status_code=201, text='{"id": "9c1d', headers=API)
    with pytest.raises(TransportError, match="outcome is unknown"):
        client.create_device(PROJECT, request)
    assert requests_mock.call_count == 2


def test_get_retried_after_429_waits_at_least_retry_after(client, requests_mock, clock, calls):
    requests_mock.get(
        f"{BASE}/devices/{DEVICE}",
        [
            {"status_code": 429, "json": {"error": "Too Many Requests"}, "headers": {**API, "Retry-After": "3"}},
            {"status_code": 200, "json": {"id": DEVICE}, "headers": API},
        ],
    )

    assert client.get_device(DEVICE) == {"id": DEVICE}
    assert len(clock.sleeps) == 1 and clock.sleeps[0] >= 3
    assert [(c.operation, c.status, c.attempt) for c in calls] == [("get_device", "429", 1), ("get_device", "200", 2)]


def test_retry_after_as_an_http_date(client, requests_mock, clock):
    requests_mock.get(
        f"{BASE}/devices/{DEVICE}",
        [
            {
                "status_code": 503,
                "json": {"error": "maintenance"},
                "headers": {
                    **API,
                    "Date": "Wed, 25 Nov 2026 12:00:00 GMT",
                    "Retry-After": "Wed, 25 Nov 2026 12:00:04 GMT",
                },
            },
            {"status_code": 200, "json": {"id": DEVICE}, "headers": API},
        ],
    )

    client.get_device(DEVICE)
    assert clock.sleeps[0] >= 4


def test_transport_errors_on_reads_are_retried(client, requests_mock, calls):
    requests_mock.get(
        f"{BASE}/devices/{DEVICE}",
        [
            {"exc": requests.exceptions.ConnectionError("[Errno 104] Connection reset by peer")},
            {"status_code": 200, "text": '{"id": "trunc', "headers": API},
            {"status_code": 200, "json": {"id": DEVICE}, "headers": API},
        ],
    )

    assert client.get_device(DEVICE) == {"id": DEVICE}
    assert [c.status for c in calls] == ["transport", "200", "200"]


def test_delete_and_update_tags_are_retried_on_5xx(client, requests_mock):
    requests_mock.delete(f"{BASE}/devices/{DEVICE}", [{"status_code": 500, "headers": API}, {"status_code": 204}])
    requests_mock.put(
        f"{BASE}/devices/{DEVICE}",
        [{"status_code": 502, "text": "bad gateway"}, {"status_code": 200, "json": {"id": DEVICE}, "headers": API}],
    )

    client.delete_device(DEVICE)
    client.update_tags(DEVICE, ["a"])
    assert requests_mock.call_count == 4


def test_exhausted_budget_raises_the_last_error_with_its_retry_after(client, requests_mock, clock):
    requests_mock.get(
        f"{BASE}/devices/{DEVICE}",
        status_code=429,
        json={"error": "Too Many Requests"},
        headers={**API, "Retry-After": "10"},
    )

    with pytest.raises(RateLimited) as caught:
        client.get_device(DEVICE)
    assert caught.value.retry_after == 10  # for the hook's resyncAfterSeconds
    assert requests_mock.call_count == 1 and clock.sleeps == []  # waiting 10 s would break the 6 s budget


def test_retries_stay_within_the_budget(clock, requests_mock):
    client = MetalClient(
        TOKEN,
        base_url=BASE,
        retry_budget=2.0,
        max_attempts=50,
        sleep=clock.sleep,
        monotonic=clock.monotonic,
        rng=random.Random(7),
    )
    requests_mock.get(f"{BASE}/devices/{DEVICE}", status_code=500, json={"error": "boom"}, headers=API)

    with pytest.raises(ServerError, match="boom"):
        client.get_device(DEVICE)
    assert sum(clock.sleeps) <= 2.0
    assert requests_mock.call_count == len(clock.sleeps) + 1 >= 2


# -- rate limits, observer, secrets --------------------------------------------------------------------------


def test_rate_limit_headers_are_recorded(client, requests_mock):
    assert client.rate_limit is None
    requests_mock.get(
        f"{BASE}/devices/{DEVICE}",
        json={"id": DEVICE},
        headers={**API, "X-RateLimit-Limit": "300", "X-RateLimit-Remaining": "42", "X-RateLimit-Reset": "1764072000"},
    )

    client.get_device(DEVICE)
    assert client.rate_limit == RateLimit(limit=300, remaining=42, reset=1764072000.0)


def test_observer_gets_one_call_per_attempt(client, requests_mock, calls):
    requests_mock.get(f"{BASE}/devices/{DEVICE}", status_code=500, json={"error": "boom"}, headers=API)

    with pytest.raises(ServerError):
        client.get_device(DEVICE)
    assert [c.attempt for c in calls] == list(range(1, requests_mock.call_count + 1))
    assert {c.status for c in calls} == {"500"} and all(c.seconds >= 0 for c in calls)


def test_secrets_never_in_logs_exceptions_or_reprs(client, requests_mock, caplog):
    caplog.set_level(logging.DEBUG)
    requests_mock.get(
        f"{BASE}/devices/{DEVICE}", status_code=401, json={"error": f"token {TOKEN} is not valid"}, headers=API
    )
    requests_mock.post(
        f"{BASE}/projects/{PROJECT}/devices",
        status_code=422,
        json={"errors": [f"userdata is invalid: {USERDATA}", "customdata: hunter2-xyz"]},
        headers=API,
    )
    requests_mock.put(f"{BASE}/devices/{DEVICE}", status_code=502, text=f"<html>echo {TOKEN}</html>")

    errors = []
    for call in (
        lambda: client.get_device(DEVICE),
        lambda: client.create_device(
            PROJECT,
            DeviceCreate(
                metro="da", plan="p", operating_system="os", userdata=USERDATA, customdata={"pw": "hunter2-xyz"}
            ),
        ),
        lambda: client.update_tags(DEVICE, ["a"]),
    ):
        with pytest.raises(MetalError) as caught:
            call()
        errors.append(caught.value)

    assert "HTTP 401" in str(errors[0]) and "[redacted]" in str(errors[0])
    shown = caplog.text + repr(client) + str(vars(client))
    for error in errors:
        shown += str(error) + repr(error) + " ".join(error.messages) + str(error.args)
    for secret in (TOKEN, "bootstrap-token-abcdef", "hunter2"):
        assert secret not in shown
    assert "GET /devices/" in caplog.text  # the calls are logged, only without secrets


def test_redact_handles_escaped_and_partial_echoes():
    text = 'bad: "#cloud-config\\nwrite_files:" and content: bootstrap-token-abcdef0123456789 &amp; s3cr3t-api'
    out = redact(text, [USERDATA, TOKEN, "", "ab"])
    assert "bootstrap-token" not in out
    assert redact("a-token-here", ["a-token-here"]) == "[redacted]"
    assert redact("keep ab", ["ab"]) == "keep ab"  # too short to be a secret worth garbling text for


def test_real_truncated_body_and_reset_are_retried_transport_errors(clock, calls):
    """Through a real socket, since requests-mock cannot cut a body short or reset a connection."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        for mode in ("truncated", "reset", "ok"):
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                if mode == "truncated":
                    conn.sendall(
                        b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 90\r\n\r\n{"id"'
                    )
                elif mode == "reset":
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                else:
                    body = b'{"id": "x"}'
                    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                    conn.sendall(head.encode() + b"Connection: close\r\n\r\n" + body)

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    client = MetalClient(
        TOKEN,
        base_url=f"http://127.0.0.1:{port}/metal/v1",
        sleep=clock.sleep,
        monotonic=clock.monotonic,
        observer=calls.append,
    )
    try:
        assert client.get_device("x") == {"id": "x"}
    finally:
        server.join(timeout=5)
        listener.close()
    assert [c.status for c in calls] == ["transport", "transport", "200"]
