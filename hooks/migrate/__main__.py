"""`python -m hooks.migrate --namespace NS [--apply] [--mcm-stopped-elsewhere] [--rollback]`: one namespace from
MCM to metal-machine-hooks (or back). The runbook is docs/migrating-from-mcm.md.

Without `--apply` nothing changes: the plan is printed. With it, in this order, each step a JSON patch guarded by
the object's resourceVersion and taken again from a fresh read:

1. MCM must no longer act on the namespace: its Deployment (`--mcm-deployment`, default machine-controller-manager)
   in the namespace is scaled to zero with no pod left, or `--mcm-stopped-elsewhere` confirms it where the program
   cannot see it;
2. the Secrets the MachineClasses name get the label `metal-machine-hooks/credentials: "true"` (the hooks see no
   other Secret), and MCM's spec.providerID is copied to the annotation `metal-machine-hooks/provider-id`;
3. the program waits (`--wait-timeout`) until Metacontroller's finalizers are on every Machine, MachineClass and
   used Secret, so that no object is ever without a holder;
4. MCM's finalizers are removed from Machines, MachineClasses, MachineSets, MachineDeployments, Secrets and the
   Machines' Nodes;
5. what the hooks will not adopt is listed (read-only Metal API calls with each class's token, METAL_API_URL).

`--rollback` (with MCM still stopped and the hooks' controllers deleted) writes spec.providerID back from the
hooks' annotation and removes the hooks' finalizers.

Exit codes: 0 done (or a dry run whose plan can go ahead), 1 not finished (an API error, or Metacontroller's
finalizers did not arrive in time: run again), 2 refused (MCM still acts on the namespace, or bad arguments).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO, cast

from hooks.config import ConfigError, Settings
from hooks.migrate import plan as planning
from hooks.migrate.devices import class_scopes, survey
from hooks.migrate.kube import KubeError, MigrationApi
from hooks.migrate.plan import Plan, Snapshot, Step

PATCH_ATTEMPTS = 5


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m hooks.migrate",
                                     description="Move one namespace's Machines from MCM to metal-machine-hooks.")
    parser.add_argument("--namespace", required=True, help="the namespace of the Machines and MachineClasses")
    parser.add_argument("--apply", action="store_true", help="change things (default: print the plan only)")
    parser.add_argument("--mcm-stopped-elsewhere", action="store_true",
                        help="confirm that MCM no longer acts on the namespace where this program cannot see it")
    parser.add_argument("--mcm-deployment", default=planning.MCM_DEPLOYMENT,
                        help="name of MCM's Deployment in the namespace (default: %(default)s)")
    parser.add_argument("--rollback", action="store_true",
                        help="undo: write spec.providerID back and remove the hooks' finalizers")
    parser.add_argument("--wait-timeout", type=float, default=300.0,
                        help="seconds to wait for Metacontroller's finalizers (default: %(default)s)")
    parser.add_argument("--poll-interval", type=float, default=2.0, help="seconds between looks while waiting")
    parser.add_argument("--skip-metal", action="store_true",
                        help="do not ask the Metal API what cannot be adopted")
    args = parser.parse_args(argv)
    if args.wait_timeout < 0 or args.poll_interval <= 0:
        parser.error("--wait-timeout must not be negative and --poll-interval must be positive")
    return args


def snapshot(api: MigrationApi, namespace: str) -> Snapshot:
    """Everything the plan reads, in one pass."""
    classes = api.list("MachineClass", namespace)
    machines = api.list("Machine", namespace)
    refs = {name for c in classes for _, ns, name in planning.secret_refs(c, namespace) if ns == namespace}
    secrets = {name: api.get("Secret", namespace, name) for name in sorted(refs)}
    node_names = sorted({str(planning.meta(m).get("labels", {}).get("node")) for m in machines
                         if (planning.meta(m).get("labels") or {}).get("node")})
    nodes = {}
    for name in node_names:
        node = api.get("Node", "", name)
        if node is not None:
            nodes[name] = node
    return Snapshot(namespace, machines=machines, classes=classes, machinesets=api.list("MachineSet", namespace),
                    deployments=api.list("MachineDeployment", namespace), secrets=secrets, nodes=nodes)


def apply_step(api: MigrationApi, namespace: str, step: Step, out: TextIO) -> bool:
    """One step, re-read and re-decided after every conflict; False if it could not be made."""
    ns = "" if step.kind == "Node" else namespace
    for _ in range(PATCH_ATTEMPTS):
        obj = api.get(step.kind, ns, step.name)
        if obj is None or not planning.still_needed(obj, step):
            return True
        if not planning.safe_to_release(obj, step):
            print(f"not done (Metacontroller's finalizer is missing again): {step.what}", file=out)
            return False
        if api.patch(step.kind, ns, step.name, planning.json_patch(obj, step)) is not None:
            print(f"done: {step.what}", file=out)
            return True
    print(f"not done (the object kept changing): {step.what}", file=out)
    return False


def wait_for_hooks(api: MigrationApi, namespace: str, timeout: float, interval: float, out: TextIO,
                   monotonic: Callable[[], float], sleep: Callable[[float], None]) -> Plan:
    """Re-plan until no object lacks Metacontroller's finalizer, or the timeout; the last plan either way."""
    deadline = monotonic() + timeout
    shown: tuple[str, ...] = ()
    while True:
        current = planning.plan_migration(snapshot(api, namespace))
        if not current.awaiting or monotonic() >= deadline:
            return current
        if tuple(current.awaiting) != shown:
            shown = tuple(current.awaiting)
            print(f"waiting for Metacontroller's finalizers on {len(shown)} object(s)", file=out)
        sleep(interval)


def metal_factory(env: Mapping[str, str]) -> Callable[[str], Any]:
    from hooks.equinix.client import MetalClient

    settings = Settings.from_env(env)
    return lambda token: MetalClient(token, base_url=settings.metal_api_url, connect_timeout=settings.connect_timeout,
                                     read_timeout=settings.read_timeout, retry_budget=settings.retry_budget)


def report_unadopted(snap: Snapshot, env: Mapping[str, str], out: TextIO,
                     metal: Callable[[str], Any] | None) -> None:
    scopes, problems = class_scopes(snap, metal or metal_factory(env))
    lines = problems + survey(snap, scopes)
    print(f"Not adopted (needs your decision): {'none' if not lines else len(lines)}", file=out)
    for line in lines:
        print(f"   - {line}", file=out)


def main(
    argv: Sequence[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    api: MigrationApi | None = None,
    metal: Callable[[str], Any] | None = None,
    out: TextIO | None = None,
    monotonic: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    args = parse_args(argv)
    env = os.environ if env is None else env
    out = out or sys.stdout
    ns = args.namespace
    mode = "rollback" if args.rollback else "migration"
    print(f"{mode} of namespace {ns} {'(applying)' if args.apply else '(dry run: nothing changes; --apply to act)'}",
          file=out)
    try:
        client = api or cast(MigrationApi, MigrationApi.in_cluster(env))  # in_cluster builds `cls`
        deployment, status = client.read("Deployment", ns, args.mcm_deployment)
        proceed, why = planning.mcm_verdict(deployment, status, stopped_elsewhere=args.mcm_stopped_elsewhere,
                                            namespace=ns, name=args.mcm_deployment)
        print(why, file=out)
        if not proceed:
            print("refused: nothing was changed", file=out)
            return 2
        snap = snapshot(client, ns)
        plan = planning.plan_rollback(snap) if args.rollback else planning.plan_migration(snap)
        for line in planning.describe(plan, rollback=args.rollback):
            print(line, file=out)
        for line in plan.attention:
            print(f"attention: {line}", file=out)
        if not args.apply:
            if not args.rollback and not args.skip_metal:
                report_unadopted(snap, env, out, metal)
            return 0
        done = all([apply_step(client, ns, step, out) for step in (*plan.label, *plan.annotate)])
        if args.rollback:
            done = all([apply_step(client, ns, step, out) for step in plan.release]) and done
            print("rollback " + ("finished: scale MCM up again" if done else "not finished: run again"), file=out)
            return 0 if done else 1
        plan = wait_for_hooks(client, ns, args.wait_timeout, args.poll_interval, out, monotonic, sleep)
        if plan.awaiting:
            for line in plan.awaiting:
                print(f"still missing: {line}", file=out)
            print("not finished: Metacontroller's finalizers did not arrive in time (is Metacontroller running with "
                  "metacontroller/*.yaml applied?); MCM's finalizers were left in place. Run again", file=out)
            return 1
        done = all([apply_step(client, ns, step, out) for step in plan.release]) and done
        if not args.skip_metal:
            report_unadopted(snapshot(client, ns), env, out, metal)
        print("migration " + ("finished" if done else "not finished: run again"), file=out)
        return 0 if done else 1
    except (KubeError, ConfigError) as exc:
        print(f"{mode} of namespace {ns} stopped: {exc}; run again once fixed (every step is safe to repeat)",
              file=out)
        return 1


if __name__ == "__main__":
    sys.exit(main())
