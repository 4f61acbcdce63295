"""`python -m nodejobs token create|delete ...` and `python -m nodejobs node sync|terminating|remove NODE ...`.

    token create --machine NAME --machine-uid UID --expiration RFC3339 [--extra-groups G1,G2]
    token delete --machine-uid UID
    node sync NODE --machine NAME --template JSON  --device-id ID --provider-id PID [--address IP ...]
    node terminating NODE --machine-phase PHASE    --device-id ID --provider-id PID [--address IP ...]
    node remove NODE                               --device-id ID --provider-id PID [--address IP ...]

Token steps derive the token from the key in BOOTSTRAP_TOKEN_KEY_FILE (mounted from a Secret) and the Machine's UID,
so no argument, log line or termination message holds its secret half. Exit 0 when done (or nothing to do), 1 when
not (the reason is printed and written to TERMINATION_MESSAGE_PATH, default /dev/termination-log), 2 on bad
arguments. The API server is reached as the drain program reaches it (drain.kube.KubeApi.from_env: KUBECONFIG, the
target cluster's kubeconfig from a Secret volume, when set; else the pod's ServiceAccount and KUBE_*).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from drain import program
from drain.kube import KubeError
from hooks.mcm import bootstrap
from nodejobs.kube import NodeSideApi
from nodejobs.steps import StepFailed, create_token, delete_token, device, mark_terminating, remove_node, sync_node


def _template(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        raise argparse.ArgumentTypeError("--template is not JSON") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("--template must be a JSON object (a Machine's spec.nodeTemplate)")
    return value


def _groups(text: str) -> str:
    try:
        return bootstrap.parse_groups(text)
    except bootstrap.BootstrapTokenError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m nodejobs", description="A Machine's Node-side steps.")
    kinds = parser.add_subparsers(dest="kind", required=True)
    token = kinds.add_parser("token", help="the Machine's bootstrap token in kube-system").add_subparsers(
        dest="action", required=True)
    create = token.add_parser("create", help="create the bootstrap token Secret")
    create.add_argument("--machine", required=True)
    create.add_argument("--machine-uid", required=True)
    create.add_argument("--expiration", type=program.instant, required=True)
    create.add_argument("--extra-groups", type=_groups, default=bootstrap.DEFAULT_EXTRA_GROUPS)
    delete = token.add_parser("delete", help="delete the bootstrap token Secret")
    delete.add_argument("--machine-uid", required=True)

    node = kinds.add_parser("node", help="the Machine's Node").add_subparsers(dest="action", required=True)
    for action, help_text in (("sync", "apply spec.nodeTemplate and the machine-name label"),
                              ("terminating", "set the Terminating condition"),
                              ("remove", "delete the Node")):
        sub = node.add_parser(action, help=help_text)
        sub.add_argument("node", help="name of the Node")
        sub.add_argument("--device-id", required=True, help="the Machine's device id (proof of ownership)")
        sub.add_argument("--provider-id", required=True, help="the device's providerID")
        sub.add_argument("--address", action="append", default=[], help="a public address of the device")
        if action == "sync":
            sub.add_argument("--machine", required=True)
            sub.add_argument("--template", type=_template, required=True)
        if action == "terminating":
            sub.add_argument("--machine-phase", default="")
    return parser.parse_args(argv)


def main(
    argv: Sequence[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    api: NodeSideApi | None = None,
    wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    termination_log: Path | None = None,
) -> int:
    args = parse_args(argv)
    env = os.environ if env is None else env

    def step() -> None:
        key = b""
        if args.kind == "token":
            key_file = (env.get(bootstrap.KEY_FILE_ENV) or "").strip()
            if not key_file:
                raise bootstrap.BootstrapTokenError(f"{bootstrap.KEY_FILE_ENV} is not set: no bootstrap token key")
            key = bootstrap.read_key(key_file)
        client = api or NodeSideApi.from_env(env)
        if args.kind == "token" and args.action == "create":
            create_token(client, key, args.machine, args.machine_uid, args.expiration, args.extra_groups)
        elif args.kind == "token":
            delete_token(client, key, args.machine_uid)
        else:
            owner = device(args.device_id, args.provider_id, args.address)
            if args.action == "sync":
                sync_node(client, args.node, args.machine, args.template, owner)
            elif args.action == "terminating":
                mark_terminating(client, args.node, args.machine_phase, owner, wall_clock)
            else:
                remove_node(client, args.node, owner)

    return program.run(step, (StepFailed, KubeError, bootstrap.BootstrapTokenError),
                       lambda exc: f"{args.kind} {args.action} failed: {exc}",
                       program.termination_log(env, termination_log))


if __name__ == "__main__":
    sys.exit(main())
