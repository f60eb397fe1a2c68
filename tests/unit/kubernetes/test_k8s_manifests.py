"""examples/kubernetes validates against the Kubernetes schemas and keeps least privilege."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
MANIFESTS = sorted((REPO / "examples" / "kubernetes").glob("*.yaml"))
K8S_VERSION = "1.30"


def _docs() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return out


DOCS = _docs()
CRDS = {"ServiceMonitor"}  # prometheus-operator's kind: no schema in kubernetes-validate


def _kind(kind: str) -> dict[str, Any]:
    return next(d for _, d in DOCS if d["kind"] == kind)


def test_every_expected_kind_is_there() -> None:
    kinds = {d["kind"] for _, d in DOCS}
    assert {"DaemonSet", "CronJob", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Service",
            "ServiceMonitor"} <= kinds


@pytest.mark.parametrize(("name", "doc"), [(n, d) for n, d in DOCS if d["kind"] not in CRDS],
                         ids=[n for n, d in DOCS if d["kind"] not in CRDS])
def test_manifest_validates_strictly(name: str, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_validation_rejects_a_broken_daemonset() -> None:
    broken = yaml.safe_load(yaml.safe_dump(_kind("DaemonSet")))
    broken["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"] = "yes"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
    unknown = yaml.safe_load(yaml.safe_dump(_kind("DaemonSet")))
    unknown["spec"]["template"]["spec"]["hostNetwrok"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(unknown, K8S_VERSION, strict=True)


def test_rbac_is_read_only_inventory() -> None:
    role = _kind("ClusterRole")
    granted = {
        (g, r, v)
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    expected = {
        ("", r, v) for r in ("namespaces", "pods", "services", "nodes") for v in ("get", "list", "watch")
    } | {("cilium.io", "ciliumidentities", v) for v in ("get", "list", "watch")}  # read: the agents allocate
    assert granted == expected
    binding = _kind("ClusterRoleBinding")
    sa = next(d for _, d in DOCS if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == "meshctl")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": sa["metadata"]["namespace"]}
    ]


def test_agent_daemonset_runs_meshctl_agent_on_the_host() -> None:
    pod = _kind("DaemonSet")["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    (agent,) = pod["containers"]
    assert agent["command"][:3] == ["meshctl", "agent", "--node"]
    env = {e["name"]: e for e in agent["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert "$(NODE_NAME)" in agent["command"]
    mounts = {m["mountPath"]: m["name"] for m in agent["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/sys/fs/bpf"]]["hostPath"]["path"] == "/sys/fs/bpf"


def test_drift_cronjob_uses_detailed_exitcode() -> None:
    job = _kind("CronJob")
    (container,) = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["command"][:2] == ["meshctl", "drift"] and "--detailed-exitcode" in container["command"]
    assert job["spec"]["concurrencyPolicy"] == "Forbid"


def test_the_agent_is_not_privileged_and_an_init_container_mounts_bpffs() -> None:
    pod = _kind("DaemonSet")["spec"]["template"]["spec"]
    (agent,) = pod["containers"]
    ctx = agent["securityContext"]
    assert ctx["privileged"] is False and ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"], "add": ["BPF", "PERFMON", "NET_ADMIN", "SYS_ADMIN"]}
    (init,) = pod["initContainers"]
    assert init["securityContext"]["privileged"] is True
    assert "mount -t bpf bpf /sys/fs/bpf" in init["command"][-1]
    propagation = {c["name"]: {m["mountPath"]: m.get("mountPropagation") for m in c["volumeMounts"]}
                   for c in (agent, init)}
    assert propagation["mount-bpf-fs"]["/sys/fs/bpf"] == "Bidirectional"  # only privileged may
    assert propagation["agent"]["/sys/fs/bpf"] == "HostToContainer"


def test_the_agent_uses_no_api_token() -> None:
    pod = _kind("DaemonSet")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    account = next(d for _, d in DOCS if d["kind"] == "ServiceAccount"
                   and d["metadata"]["name"] == pod["serviceAccountName"])
    assert account["automountServiceAccountToken"] is False
    bound = {s["name"] for _, d in DOCS if d["kind"] == "ClusterRoleBinding" for s in d["subjects"]}
    assert pod["serviceAccountName"] not in bound


def test_probes_and_metrics_reach_the_agents_metrics_port() -> None:
    (agent,) = _kind("DaemonSet")["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in agent["ports"]}
    assert agent["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert agent["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    command = agent["command"]
    assert str(ports["metrics"]) == command[command.index("--metrics-port") + 1]
    assert command[command.index("--metrics-address") + 1] == "0.0.0.0"
    service, monitor = _kind("Service"), _kind("ServiceMonitor")
    pod_labels = _kind("DaemonSet")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [service["spec"]["ports"][0]["name"]]
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [service["metadata"]["namespace"]]


def _substituted(command: list[str], env: dict[str, str]) -> list[str]:
    """The container's command as the kubelet runs it: $(VAR) replaced from `env`."""
    out = []
    for word in command:
        for name, value in env.items():
            word = word.replace(f"$({name})", value)
        out.append(word)
    return out


def test_the_agent_serves_the_node_api_over_mutual_tls_with_the_nodes_own_certificate(tmp_path: Path) -> None:
    """The DaemonSet's command line is one `meshctl agent` accepts, and its --listen/--tls-*
    arguments make a mutual-TLS server context from a certificate naming the node."""
    import typer.main

    from meshctl.cli.agent import _api_address
    from meshctl.cli.main import app
    from meshctl.lab.pki import Authority, issue_node

    pod = _kind("DaemonSet")["spec"]["template"]["spec"]
    (agent,) = pod["containers"]
    env = {e["name"]: e for e in agent["env"]}
    assert env["NODE_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"
    pki = next(m for m in agent["volumeMounts"] if m["name"] == "node-pki")
    assert pki["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == "node-pki")
    assert volume["hostPath"]["path"] == pki["mountPath"] == "/etc/meshctl/pki"  # the key stays on the node

    authority = Authority.create("meshctl test CA")
    cert, key = issue_node(authority, tmp_path, "node-1", "10.0.0.5")
    ca = tmp_path / "ca.crt"
    authority.write(ca, tmp_path / "ca.key")
    files = {"/etc/meshctl/pki/ca.crt": str(ca), "/etc/meshctl/pki/node.crt": str(cert),
             "/etc/meshctl/pki/node.key": str(key)}
    args = [files.get(w, w) for w in _substituted(agent["command"][2:],
                                                   {"NODE_NAME": "node-1", "NODE_IP": "10.0.0.5",
                                                    "MESHCTL_CLUSTER": "production"})]
    command = typer.main.get_command(app).commands["agent"]  # type: ignore[attr-defined]
    params = command.make_context("agent", args).params
    address, tls = _api_address(params["listen"], params["tls_ca"], params["tls_cert"], params["tls_key"],
                                params["insecure"])
    ports = {p["name"]: p["containerPort"] for p in agent["ports"]}
    assert address == ("10.0.0.5", ports["node-api"]) and tls is not None
    import ssl

    assert tls.verify_mode == ssl.CERT_REQUIRED and params["insecure"] is False


def test_the_drift_cronjob_reaches_every_agent_with_the_client_certificate_of_a_secret() -> None:
    from meshctl.agentapi.tls import ENV_CA, ENV_CERT, ENV_KEY

    pod = _kind("CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (drift,) = pod["containers"]
    env = {e["name"]: e["value"] for e in drift["env"]}
    mount = next(m for m in drift["volumeMounts"] if m["name"] == "client-tls")
    assert mount["readOnly"] is True
    assert env == {ENV_CA: f"{mount['mountPath']}/ca.crt", ENV_CERT: f"{mount['mountPath']}/tls.crt",
                   ENV_KEY: f"{mount['mountPath']}/tls.key"}  # the keys of a kubernetes.io/tls Secret
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["client-tls"]["secret"]["secretName"] == "meshctl-drift-client"
    assert not any("hostPath" in v for v in volumes.values()), "no node socket: the agents over the network"
