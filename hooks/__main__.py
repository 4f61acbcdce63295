"""Command line: `python -m hooks replay FIXTURE.json` runs one hook on a recorded Metacontroller request.

Users record a request (or write one by hand, shaped like the fixtures in tests/fixtures/) and see exactly what the
hook would answer, with the same settings the server reads from the environment (METAL_API_URL and friends).

A recorded request holds a real token, so replay is careful: a configuration error stops it before anything is
called, and unless METAL_API_URL is set explicitly it is a dry run (`--dry-run`, `--apply` to override): the API
is read, but no POST, PUT, PATCH or DELETE is sent, and what would have been sent is printed on stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hooks.config import ConfigError, Settings
from hooks.server.app import create_app

KIND_ROUTES = {
    "Machine": "/machine",
    "MachineClass": "/machineclass",
    "MachineSet": "/machineset",
    "MachineDeployment": "/machinedeployment",
}


def guess_route(body: dict[str, Any]) -> str:
    """Which hook a request is for: customize requests have only `controller` + `parent`.

    Sync/finalize requests add `related`/`finalizing` and the observed objects: decorators (v1 and v2 alike) send
    the object as `object` with `attachments`, composites as `parent` with `children`.
    """
    target = body.get("object") if isinstance(body.get("object"), dict) else body.get("parent")
    kind = target.get("kind") if isinstance(target, dict) else None
    if kind not in KIND_ROUTES:
        raise SystemExit(f"cannot tell which hook this request is for (kind {kind!r}); pass --hook PATH")
    if not any(key in body for key in ("object", "attachments", "children", "related", "finalizing")):
        return f"{KIND_ROUTES[kind]}/customize"
    if body.get("finalizing") and kind in ("Machine", "MachineClass"):
        return f"{KIND_ROUTES[kind]}/finalize"
    return f"{KIND_ROUTES[kind]}/sync"


def settings_or_exit(env: dict[str, str] | None = None) -> Settings:
    """The server's settings, or exit 2 naming the problem: replay never falls back to defaults."""
    try:
        settings = Settings.from_env(os.environ if env is None else env)
    except ConfigError as exc:
        raise SystemExit(f"replay refused: the configuration is invalid: {exc}") from None
    # The replayed call is made in-process, not over the network: the server's own bearer token is not needed.
    return dataclasses.replace(settings, hook_auth_token="", hook_auth_token_next="", hook_auth_required=False)


def read_only_metal(settings: Settings) -> tuple[Callable[[str], Any], list[str]]:
    """A client factory whose clients read the API but never write, and the list their writes are recorded in."""
    from hooks.equinix.client import MetalClient
    from hooks.equinix.readonly import read_only_session
    from hooks.equinix.sessions import new_session

    session, adapter = read_only_session(new_session(settings.metal_api_url))

    def build(token: str) -> Any:
        return MetalClient(token, base_url=settings.metal_api_url, connect_timeout=settings.connect_timeout,
                           read_timeout=settings.read_timeout, retry_budget=settings.retry_budget, session=session)

    return build, adapter.would_have


def replay(path: Path, hook: str | None, *, dry_run: bool | None = None) -> tuple[int, Any, list[str] | None]:
    """(HTTP status, answer, writes a dry run held back or None when writes were sent)."""
    raw = path.read_text()
    try:
        body = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"{path}: not JSON: {exc}") from None
    route = hook or guess_route(body if isinstance(body, dict) else {})
    settings = settings_or_exit()
    if dry_run is None:
        dry_run = not os.environ.get("METAL_API_URL")
    held_back: list[str] | None = None
    if dry_run:
        metal, held_back = read_only_metal(settings)
        app = create_app(settings, metal=metal)
    else:
        app = create_app(settings)
    response = app.test_client().post(route, data=raw, content_type="application/json")
    return response.status_code, response.get_json(silent=True), held_back


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hooks", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("replay", help="run one hook on a recorded request and print the response")
    run.add_argument("fixture", type=Path, help="a JSON request as Metacontroller sends it")
    run.add_argument("--hook", help="route to call, e.g. /machine/sync (default: guessed from the request)")
    mode = run.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", dest="dry_run", action="store_true", default=None,
                      help="read the API but send no write (the default unless METAL_API_URL is set)")
    mode.add_argument("--apply", dest="dry_run", action="store_false",
                      help="send writes too: the hook may create or delete real servers")
    args = parser.parse_args(argv)
    status, answer, held_back = replay(args.fixture, args.hook, dry_run=args.dry_run)
    json.dump(answer, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    if held_back is not None:
        sys.stderr.write("dry run: nothing was written to the Metal API\n")
        for line in held_back:
            sys.stderr.write(f"dry run: would have sent {line}\n")
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
