"""Tenant isolation, tried as an attacker would (issue 14 items 1 and 2).

- The namesake Machine: a Machine named after an existing Node and labelled `node=<that name>`, with no class and no
  device, must get no drain Job from its first finalize (nor any later one); the same for a Machine with its own
  device whose related Node is another device's. An unproven Node is no Node for health either.
- Two namespaces and two installations sharing one project and one cluster tag: team-a's class never deletes
  team-b's devices, another installation's, or devices made before tenant tags existed.
- One scan deletes at most ORPHAN_DELETIONS_PER_SCAN devices, and says how many and why.
- Without an installation id nothing is created or collected (fail closed), with the reason shown.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from hooks.config import ConfigError, Settings
from hooks.context import HookContext, Runtime
from hooks.equinix import tags, tenancy
from hooks.equinix.client import MetalClient
from hooks.equinix.driver import EquinixDriver
from hooks.mcm import installation, machine, machineclass
from tests.clocks import ManualClock
from tests.conftest import MetalSim
from tests.machine_support import (
    INSTALLATION,
    NAME,
    NS,
    TENANT_TAGS,
    UID_TAG,
    Clock,
    FakeMetal,
    apply,
    cached_crd_schemas,
    clock_fixture,
    context,
    decorated,
    fake_fixture,
    finalize_request,
    node,
    node_of,
    sync_request,
    with_node,
)

__all__ = ["cached_crd_schemas", "clock_fixture", "fake_fixture"]

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "kubernetes" / "examples"
MACHINE_API = "machine.sapcloud.io/v1alpha1"
VICTIM = "victim-node"


def victim_node() -> dict[str, Any]:
    """A Ready Node of someone else's server (its providerID names a device the attacker does not own)."""
    obj = node()
    obj["metadata"]["name"] = VICTIM
    obj["spec"]["providerID"] = "equinixmetal://da/0badc0de-0000-4000-8000-00000000beef"
    return obj


def namesake_finalize() -> dict[str, Any]:
    """A Machine named after the victim's Node, labelled `node=<victim>`, without class or device, being deleted."""
    body = finalize_request()
    meta = decorated(body)["metadata"]
    meta["name"] = VICTIM
    meta.setdefault("labels", {})["node"] = VICTIM
    meta.pop("ownerReferences", None)
    decorated(body)["spec"] = {}
    body["related"]["MachineClass.machine.sapcloud.io/v1alpha1"] = {}
    body["related"]["Node.v1"] = {VICTIM: victim_node()}
    return body


def test_a_namesake_machine_gets_no_drain_job_from_its_first_or_any_finalize(fake: FakeMetal, clock: Clock) -> None:
    body = namesake_finalize()
    ctx = context(fake, clock)
    for _ in range(3):
        answer = machine.finalize(body, ctx)
        assert answer["attachments"] == [], "a drain Job for someone else's Node"
        body = apply(body, answer)
    first = machine.finalize(namesake_finalize(), ctx)
    assert "cannot be proven to be its own" in first["status"]["lastOperation"]["description"]
    assert "neither followed for health nor drained" in first["status"]["lastOperation"]["description"]
    assert fake.ops() == []  # no class: no API call either


def test_a_machine_whose_related_node_is_another_device_s_never_drains_it(fake: FakeMetal, clock: Clock) -> None:
    """The Machine has its own device, but the Node named like it is another server's: not drained, and the
    finalize goes on to delete the Machine's own device only."""
    ctx = context(fake, clock)
    body = apply(sync_request(), machine.sync(sync_request(), ctx))  # creates the Machine's device
    (own,) = fake.devices
    other = fake.add(hostname="someone-else", tags=["team: other"], ip_addresses=[
        {"address_family": 4, "public": True, "address": "147.75.99.1"}])
    imposter = node()
    imposter["spec"]["providerID"] = f"equinixmetal://{other['id']}"
    body = with_node(finalize_request(body), imposter)
    answers = []
    for _ in range(4):
        answer = machine.finalize(body, ctx)
        answers.append(answer)
        assert answer["attachments"] == []
        body = apply(body, answer)
        if answer.get("finalized"):
            break
    assert "is not device" in answers[0]["status"]["lastOperation"]["description"]
    assert answers[-1]["finalized"] is True
    assert own not in fake.devices and other["id"] in fake.devices


def test_a_node_sharing_only_a_private_address_is_not_proof(fake: FakeMetal, clock: Clock) -> None:
    ctx = context(fake, clock)
    body = apply(sync_request(), machine.sync(sync_request(), ctx))
    lookalike = node()
    lookalike["status"]["addresses"] = [{"type": "InternalIP", "address": "10.70.1.3"},
                                        {"type": "ExternalIP", "address": "10.70.1.3"}]
    answer = machine.finalize(with_node(finalize_request(body), lookalike), ctx)
    assert answer["attachments"] == []
    assert "no public address of device" in answer["status"]["lastOperation"]["description"]


def test_the_machine_s_own_node_is_drained_in_either_provider_id_form(fake: FakeMetal, clock: Clock) -> None:
    ctx = context(fake, clock)
    body = apply(sync_request(), machine.sync(sync_request(), ctx))
    (device_id,) = fake.devices
    for provider_id in (f"equinixmetal://{device_id}", f"equinixmetal://ny/{device_id}"):
        own = node()
        own["spec"]["providerID"] = provider_id
        answer = machine.finalize(with_node(finalize_request(body), own), ctx)
        (job,) = [j for j in answer["attachments"]
                  if j["metadata"]["labels"].get("app.kubernetes.io/name") == "metal-machine-drain"]
        assert job["kind"] == "Job"


def test_an_unproven_ready_node_does_not_make_the_machine_running(fake: FakeMetal, clock: Clock) -> None:
    ctx = context(fake, clock)
    body = apply(sync_request(), machine.sync(sync_request(), ctx))
    (device_id,) = fake.devices
    fake.devices[device_id]["state"] = "active"
    clock.advance(minutes=2)
    answer = machine.sync(with_node(body, victim_node() | {"metadata": {"name": NAME}}), ctx)
    assert answer["status"]["currentStatus"]["phase"] == "Pending"
    assert "neither followed for health nor drained" in answer["status"]["lastOperation"]["description"]
    proven = machine.sync(with_node(body, node_of({"id": device_id})), ctx)
    assert proven["status"]["currentStatus"]["phase"] == "Running"


# ------------------------------------------------------------------------------------------- installation id


def test_without_an_installation_id_nothing_is_created_and_the_status_says_why(fake: FakeMetal,
                                                                              clock: Clock) -> None:
    body = sync_request()
    del body["related"][installation.NAMESPACE_KEY]
    answer = machine.sync(body, context(fake, clock))
    assert "create_device" not in fake.ops()
    assert "INSTALLATION_ID" in answer["status"]["lastOperation"]["description"]


def test_a_configured_installation_id_wins_and_is_checked(fake: FakeMetal, clock: Clock) -> None:
    body = sync_request()
    del body["related"][installation.NAMESPACE_KEY]
    machine.sync(body, context(fake, clock, installation_id="prod-eu-1"))
    (request,) = fake.create_requests
    assert tenancy.tenant_tags("prod-eu-1", NS) == [t for t in request.tags if t.startswith(tenancy.PREFIX)
                                                    and ("installation:" in t or "namespace:" in t)]
    assert Settings.from_env({"INSTALLATION_ID": "prod-eu-1"}).installation_id == "prod-eu-1"
    with pytest.raises(ConfigError, match="INSTALLATION_ID"):
        Settings.from_env({"INSTALLATION_ID": "a,b"})  # would forge a second tag


def test_a_sync_adds_missing_tenant_tags_to_its_own_device_in_one_update(fake: FakeMetal, clock: Clock) -> None:
    """A device made before tenancy existed gets its tenant tags from its Machine's next sync."""
    old = fake.add(tags=["metal-machine-hooks:managed", UID_TAG, "team: platform"], state="active")
    body = sync_request()
    decorated(body)["metadata"].setdefault("annotations", {})["metal-machine-hooks/device-id"] = old["id"]
    ctx = context(fake, clock)
    machine.sync(body, ctx)
    assert fake.ops().count("update_tags") == 1
    assert fake.devices[old["id"]]["tags"] == ["metal-machine-hooks:managed", UID_TAG, "team: platform",
                                               *TENANT_TAGS]
    machine.sync(body, ctx)
    assert fake.ops().count("update_tags") == 1  # nothing missing any more: no write


# ------------------------------------------------------------------------------- two namespaces, two installs


CLUSTER = "kubernetes.io/cluster/shared"  # copied from one example by everybody: no boundary
OTHER_INSTALLATION = "11111111-2222-4333-8444-555555555555"
CLASS_FIXTURE = Path(__file__).parent / "fixtures" / "machineclass" / "sync-request.json"


class Project:
    """One simulator project shared by team-a and team-b of this installation and by another installation."""

    def __init__(self, sim: MetalSim, now: datetime) -> None:
        self.sim = sim
        self.now = now
        self.runtime = Runtime()

    def device(self, uid: str, *extra: str) -> dict[str, Any]:
        return self.sim.sim.add_device(self.sim.project, hostname=f"h-{uid[:8]}", state="active",
                                       tags=[*tags.ownership_tags(uid), CLUSTER, "kubernetes.io/role/node", *extra])

    def class_body(self, namespace: str) -> dict[str, Any]:
        body = json.loads(CLASS_FIXTURE.read_text())
        for obj in (body["object"], *body["related"]["Secret.v1"].values()):
            obj["metadata"]["namespace"] = namespace
        body["object"]["metadata"]["uid"] = f"class-{namespace}"
        body["object"]["secretRef"]["namespace"] = namespace
        body["object"]["providerSpec"]["projectID"] = self.sim.project
        body["object"]["providerSpec"]["tags"] = [CLUSTER, "kubernetes.io/role/node"]
        body["related"]["Secret.v1"] = {f"{namespace}/{name.split('/')[1]}": secret
                                        for name, secret in body["related"]["Secret.v1"].items()}
        for secret in body["related"]["Secret.v1"].values():
            secret["data"]["apiToken"] = base64.b64encode(self.sim.token.encode()).decode()
        body["related"][machineclass.MACHINE_KEY] = {}  # every Machine of the class is gone
        return body

    def ctx(self, **settings: Any) -> HookContext:
        def metal(token: str) -> MetalClient:
            return MetalClient(token, base_url=self.sim.url)

        config = Settings(**settings)
        return HookContext(settings=config, metal=metal, clock=lambda: self.now, runtime=self.runtime,
                           driver=EquinixDriver(config, metal))

    def scan(self, body: dict[str, Any], **settings: Any) -> dict[str, Any]:
        answer = machineclass.sync(body, self.ctx(**settings))
        for key, value in answer["annotations"].items():
            annotations = body["object"]["metadata"].setdefault("annotations", {})
            if value is None:
                annotations.pop(key, None)
            else:
                annotations[key] = value
        return answer

    def live(self) -> set[str]:
        return {d["id"] for d in self.sim.sim.devices() if d.get("state") not in ("deprovisioning", "deleted")}

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def project(metal_sim_factory: Callable[..., MetalSim]) -> Iterator[Project]:
    clock = ManualClock()
    sim = metal_sim_factory(clock=clock)
    made = Project(sim, datetime.now().astimezone())
    yield made


def _old(project: Project) -> None:
    """Let the devices be older than the creation timeout, as orphans must be."""
    created = [datetime.fromisoformat(d["created_at"].replace("Z", "+00:00")) for d in project.sim.sim.devices()]
    project.now = max(created) + timedelta(hours=1)


def test_team_a_never_collects_team_b_s_another_installation_s_or_untagged_devices(project: Project) -> None:
    ours_a = project.device("aaaa0000-0000-4000-8000-000000000001", *tenancy.tenant_tags(INSTALLATION, "team-a"))
    team_b = project.device("bbbb0000-0000-4000-8000-000000000001", *tenancy.tenant_tags(INSTALLATION, "team-b"))
    other_install = project.device("cccc0000-0000-4000-8000-000000000001",
                                   *tenancy.tenant_tags(OTHER_INSTALLATION, "team-a"))
    untagged = project.device("dddd0000-0000-4000-8000-000000000001")  # made before tenant tags existed
    two_tenants = project.device("eeee0000-0000-4000-8000-000000000001",
                                 *tenancy.tenant_tags(INSTALLATION, "team-a"), tenancy.namespace_tag("team-b"))
    _old(project)
    body_a, body_b = project.class_body("team-a"), project.class_body("team-b")
    for _ in range(3):
        project.scan(body_a)
        project.scan(body_b)
        project.advance(machineclass.ORPHAN_CONFIRM_SECONDS + machineclass.SCAN_INTERVAL)
    # Each class collected its own namespace's orphans of this installation, nothing else.
    assert ours_a["id"] not in project.live() and team_b["id"] not in project.live()
    assert {other_install["id"], untagged["id"], two_tenants["id"]} <= project.live()


def test_another_installation_s_class_with_the_same_namespace_and_tag_collects_only_its_own(project: Project) -> None:
    mine = project.device("aaaa0000-0000-4000-8000-000000000002", *tenancy.tenant_tags(INSTALLATION, "team-a"))
    theirs = project.device("cccc0000-0000-4000-8000-000000000002",
                            *tenancy.tenant_tags(OTHER_INSTALLATION, "team-a"))
    _old(project)
    body = project.class_body("team-a")
    for _ in range(2):
        project.scan(body, installation_id=OTHER_INSTALLATION)  # the other cluster's hooks, configured id
        project.advance(machineclass.ORPHAN_CONFIRM_SECONDS + machineclass.SCAN_INTERVAL)
    assert mine["id"] in project.live() and theirs["id"] not in project.live()


def test_a_class_without_an_installation_id_scans_nothing_and_says_why(project: Project) -> None:
    project.device("aaaa0000-0000-4000-8000-000000000003", *tenancy.tenant_tags(INSTALLATION, "team-a"))
    body = project.class_body("team-a")
    del body["related"][installation.NAMESPACE_KEY]
    answer = project.scan(body)
    assert "INSTALLATION_ID" in answer["annotations"][machineclass.SCAN_PROBLEM_ANNOTATION]
    assert sum(project.sim.sim.calls.values()) == 0


def test_one_scan_deletes_at_most_the_limit_and_says_how_many_and_why(project: Project) -> None:
    orphans = {project.device(f"aaaa0000-0000-4000-8000-{i:012d}", *tenancy.tenant_tags(INSTALLATION, "team-a"))["id"]
               for i in range(25)}
    _old(project)
    body = project.class_body("team-a")
    project.scan(body)  # first sightings
    left = []
    for _ in range(3):
        project.advance(machineclass.ORPHAN_CONFIRM_SECONDS + machineclass.SCAN_INTERVAL)
        answer = project.scan(body)
        left.append(len(orphans & project.live()))
        if left[-1]:
            assert answer["annotations"][machineclass.ORPHANS_ANNOTATION] == "10"
    assert left == [15, 5, 0]
    assert "at most 10 deletions per scan" in project_reason(project, body, orphans)


def project_reason(project: Project, body: dict[str, Any], orphans: set[str]) -> str:
    """The reason the first limited scan wrote (replayed on a fresh class body with 25 fresh orphans)."""
    fresh = {project.device(f"ffff0000-0000-4000-8000-{i:012d}", *tenancy.tenant_tags(INSTALLATION, "team-b"))["id"]
             for i in range(12)}
    body_b = project.class_body("team-b")
    project.scan(body_b)
    project.advance(machineclass.ORPHAN_CONFIRM_SECONDS + machineclass.SCAN_INTERVAL)
    answer = project.scan(body_b)
    reason = answer["annotations"][machineclass.ORPHANS_REASON_ANNOTATION]
    assert answer["annotations"][machineclass.ORPHANS_ANNOTATION] == "10"
    assert "2 more orphans left for the next scan" in reason and "no Machine has their owner UID" in reason
    assert len(fresh & project.live()) == 2
    return str(reason)


def test_the_per_scan_limit_is_a_setting() -> None:
    assert Settings().orphan_deletions_per_scan == 10
    assert Settings.from_env({"ORPHAN_DELETIONS_PER_SCAN": "3"}).orphan_deletions_per_scan == 3
    with pytest.raises(ConfigError, match="ORPHAN_DELETIONS_PER_SCAN"):
        Settings.from_env({"ORPHAN_DELETIONS_PER_SCAN": "0"})


# ------------------------------------------------------------------------------------------------ end to end


@pytest.mark.e2e
@pytest.mark.slow
def test_a_namesake_machine_drains_nothing_end_to_end(metal_sim_factory: Callable[..., Any]) -> None:
    """Through Metacontroller's emulator: a Node of another server, a Machine named after it and labelled
    `node=<name>` with no usable class; deleting it starts no Job and leaves the Node schedulable."""
    from tests.emulator_support import real_cluster

    secret = yaml.safe_load((EXAMPLES / "secret.yaml").read_text())
    project_id = next(d for d in yaml.safe_load_all((EXAMPLES / "machine-class.yaml").read_text())
                      if d and d.get("kind") == "MachineClass")["providerSpec"]["projectID"]
    sim = metal_sim_factory(tokens={secret["stringData"]["apiToken"]: [project_id]})
    with real_cluster(sim.url, sim.base_url) as running:
        store, mc = running.store, running.mc
        # Someone else's server in the same project, whose kubelet joined as Node `victim-node`.
        victim = sim.sim.add_device(project_id, hostname=VICTIM, state="active", tags=["team: payments"])
        mc.wait_for(lambda s: s.try_get("v1", "Node", VICTIM) is not None, timeout=30, message="victim Node")
        store.load_yaml([EXAMPLES / "secret.yaml", EXAMPLES / "machine-class.yaml"])
        store.create({"apiVersion": MACHINE_API, "kind": "Machine",
                      "metadata": {"name": VICTIM, "namespace": "default", "labels": {"node": VICTIM}},
                      "spec": {"class": {"kind": "MachineClass", "name": "no-such-class"}}})
        mc.wait_for(lambda s: ((s.get(MACHINE_API, "Machine", VICTIM, "default").get("status") or {})
                               .get("lastOperation") or {}).get("description"), timeout=30,
                    message="the Machine's first sync")
        store.delete(MACHINE_API, "Machine", VICTIM, "default")

        def finalized_twice(s: Any) -> bool:
            return len([c for c in mc.hook_calls() if c["controller"] == "metal-machines"
                        and c["hook"] == "finalize"]) >= 2

        mc.wait_for(finalized_twice, timeout=30, message="two finalize calls")
        mc.wait_idle(timeout=30)
        assert store.list("batch/v1", "Job", "default") == []
        assert not (store.get("v1", "Node", VICTIM).get("spec") or {}).get("unschedulable")
        assert victim["id"] in {d["id"] for d in sim.sim.devices()}
        description = store.get(MACHINE_API, "Machine", VICTIM, "default")["status"]["lastOperation"]["description"]
        assert "drain" not in description.lower() or "Skipping drain" in description
