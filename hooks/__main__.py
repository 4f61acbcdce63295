"""Command line: `python -m hooks replay FIXTURE.json` runs one hook on a recorded Metacontroller request.

Users record a request (or write one by hand, shaped like the fixtures in tests/fixtures/) and see exactly what the
hook would answer, with the same settings the server reads from the environment (METAL_API_URL and friends).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from hooks.app import create_app

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


def replay(path: Path, hook: str | None) -> tuple[int, Any]:
    raw = path.read_text()
    try:
        body = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"{path}: not JSON: {exc}") from None
    route = hook or guess_route(body if isinstance(body, dict) else {})
    client = create_app().test_client()
    response = client.post(route, data=raw, content_type="application/json")
    return response.status_code, response.get_json(silent=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hooks", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("replay", help="run one hook on a recorded request and print the response")
    run.add_argument("fixture", type=Path, help="a JSON request as Metacontroller sends it")
    run.add_argument("--hook", help="route to call, e.g. /machine/sync (default: guessed from the request)")
    args = parser.parse_args(argv)
    status, answer = replay(args.fixture, args.hook)
    json.dump(answer, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
