"""deploy/: the compose file against the compose-spec schema, the Kubernetes manifests against the
Kubernetes API schemas (strict: unknown fields fail), and the wiring between them (ports, mounts,
secrets, the configs they ship). Neither Docker nor a cluster runs here: these checks are offline.
"""
from __future__ import annotations

import json
import os
import re
from fnmatch import fnmatch
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import kubernetes_validate
import pytest
import yaml
from qdrant_client import grpc as qgrpc
from kubernetes_validate.utils import latest_version

from proxy.server import ADMIN_GRACE_SECONDS, CUT_OFF_ANSWER_SECONDS
from routing.config import parse_config, parse_duration
from tests.support import REPO_ROOT, RunningProxy, ServerProcess, free_port, qdrant_client

DEPLOY = REPO_ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
KUBERNETES = DEPLOY / "kubernetes"
ADMIN_TOKEN = "test-token"
# What the deployments pass to the proxy from their Secret / environment.
DEPLOYMENT_ENV = {
    "BLUEGREEN_ADMIN_TOKEN": ADMIN_TOKEN,
    "BLUEGREEN_READER_KEY": "test-reader-key-4f1c",
    "BLUEGREEN_INGEST_KEY": "test-ingest-key-9a2e",
}


def check_compose_schema(path: Path) -> subprocess.CompletedProcess:
    """check-jsonschema with the compose-spec schema it vendors (no network)."""
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True, text=True,
    )


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def published_port(port: str | dict) -> int:
    """The host port of a compose `ports` entry, short (`[ip:]host:container`) or long syntax."""
    if isinstance(port, dict):
        return int(port["published"])
    return int(port.split(":")[-2])


def proxy_config(text: str, monkeypatch, **env: str):
    for name, value in {**DEPLOYMENT_ENV, **env}.items():
        monkeypatch.setenv(name, value)
    return parse_config(text)


# ------------------------------------------------------------------ compose

def test_compose_file_matches_the_compose_spec():
    result = check_compose_schema(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_schema_check_rejects_a_misspelled_key(tmp_path):
    document = compose()
    document["services"]["proxy"]["volums"] = document["services"]["proxy"].pop("volumes")
    broken = tmp_path / "compose.yaml"
    broken.write_text(yaml.safe_dump(document))
    result = check_compose_schema(broken)
    assert result.returncode == 1
    assert "volums" in result.stdout + result.stderr


def test_compose_wiring(monkeypatch):
    services = compose()["services"]
    assert set(services) == {"qdrant", "proxy", "prometheus", "grafana", "demo-traffic"}
    assert services["demo-traffic"]["profiles"] == ["demo"], "the demo is opt-in"

    # Qdrant: an official image pinned to a release; its REST port moved off the proxy's 6333.
    qdrant = services["qdrant"]
    assert re.fullmatch(r"qdrant/qdrant:v\d+\.\d+\.\d+", qdrant["image"])
    qdrant_port = int(qdrant["environment"]["QDRANT__SERVICE__HTTP_PORT"])
    assert qdrant_port not in (6333, 6334, 6335)  # the proxy's; Qdrant's gRPC and cluster ports
    for service in ("prometheus", "grafana"):
        assert re.fullmatch(r"[\w/.-]+:v?\d+\.\d+\.\d+", services[service]["image"]), services[service]["image"]

    # The proxy: built from the Dockerfile, the config mounted as a directory, the state in Qdrant.
    proxy = services["proxy"]
    assert (DEPLOY / proxy["build"]["context"] / proxy["build"]["dockerfile"]).resolve() == REPO_ROOT / "Dockerfile"
    config_mount = next(v for v in proxy["volumes"] if isinstance(v, dict) and v["target"] == "/etc/bluegreen")
    config_dir = DEPLOY / config_mount["source"]
    assert config_dir.is_dir(), "the config is mounted as a directory, so that edits reach the proxy"
    assert proxy["command"][-1] == "/etc/bluegreen/bluegreen.yaml"
    config = proxy_config((config_dir / "bluegreen.yaml").read_text(), monkeypatch)
    assert config.state.store == "qdrant" and len(proxy["volumes"]) == 1, "no volume for the state"
    assert config.upstream.url == f"http://qdrant:{qdrant_port}"
    assert config.listen.host == config.admin.host == "0.0.0.0"  # Prometheus scrapes from its own container
    assert config.admin.token == ADMIN_TOKEN  # from the environment, never in the file
    assert f"{config.listen.port}:{config.listen.port}" in proxy["ports"]
    assert f"127.0.0.1:{config.admin.port}:{config.admin.port}" in proxy["ports"]  # the admin port stays on the host
    # gRPC: the proxy's listener on Qdrant's 6334, published in place of Qdrant's; Qdrant's own gRPC port
    # is reached by the proxy over the compose network only.
    assert config.grpc is not None and (config.grpc.host, config.grpc.port) == ("0.0.0.0", 6334)
    grpc_port = next(p for p in proxy["ports"] if isinstance(p, dict) and p["name"] == "grpc")
    assert (grpc_port["target"], int(grpc_port["published"]), grpc_port["app_protocol"]) == (6334, 6334, "grpc")
    assert "host_ip" not in grpc_port  # on every interface, as the REST data port: clients authenticate
    assert config.upstream.grpc_target == "qdrant:6334"
    exposed = re.search(r"^EXPOSE (.+)$", (REPO_ROOT / "Dockerfile").read_text(), re.MULTILINE)[1].split()
    assert {str(config.listen.port), str(config.grpc.port), str(config.admin.port)} <= set(exposed)
    published = {name: {published_port(p) for p in service.get("ports", [])} for name, service in services.items()}
    assert published["qdrant"] == {qdrant_port}, "Qdrant's REST port on the host's loopback only, for building collections"
    assert all(6334 not in ports for name, ports in published.items() if name != "proxy")
    assert all(not isinstance(p, str) or p.startswith("127.0.0.1:") for p in services["qdrant"]["ports"])
    assert config.routes, "the stack comes with a route to try"
    # The data port is published on every interface: clients authenticate with keys from the environment.
    assert config.clients is not None and config.clients.anonymous == "none"
    for name in ("BLUEGREEN_READER_KEY", "BLUEGREEN_INGEST_KEY"):
        assert name in proxy["environment"] and "${" + name in proxy["environment"][name]
    demo = services["demo-traffic"]
    assert demo["environment"]["BLUEGREEN_API_KEY"].startswith("${BLUEGREEN_READER_KEY")

    # Prometheus scrapes the proxy's admin port and loads the rule file; Grafana gets the dashboard.
    prometheus_config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in prometheus_config["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    assert f"proxy:{config.admin.port}" in targets
    assert f"qdrant:{qdrant_port}" in targets
    for service in ("prometheus", "grafana"):
        for volume in services[service]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (DEPLOY / source).exists(), f"{service} mounts {source}, which does not exist"
    mounted = {v.split(":")[1] for v in services["prometheus"]["volumes"]}
    assert any(fnmatch(target, pattern) and target.endswith("/bluegreen-rules.yml")
               for pattern in prometheus_config["rule_files"] for target in mounted)
    provider = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "bluegreen.yml").read_text())
    dashboard_dir = provider["providers"][0]["options"]["path"]
    assert any(v.split(":")[1].startswith(dashboard_dir + "/") for v in services["grafana"]["volumes"])
    datasource = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"


# ------------------------------------------------------------------ kubernetes

QDRANT_POLICY = "NetworkPolicy/qdrant-from-bluegreen-proxy"


def manifests() -> dict[str, dict]:
    """kind -> document, from every manifest file (one document each); `kind/name` for those not
    named bluegreen-proxy (Qdrant's NetworkPolicy)."""
    found = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            name = document["metadata"]["name"]
            found[document["kind"] if name == "bluegreen-proxy" else f"{document['kind']}/{name}"] = document
    return found


@pytest.mark.parametrize("path", sorted(p.name for p in KUBERNETES.glob("*.yaml") if p.name != "kustomization.yaml"))
def test_kubernetes_manifest_matches_the_api_schema(path):
    for document in yaml.safe_load_all((KUBERNETES / path).read_text()):
        try:
            kubernetes_validate.validate(document, latest_version(), strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path}: {exc.message} at {'.'.join(map(str, exc.path))}")


def test_kubernetes_schema_check_rejects_a_misspelled_field():
    deployment = manifests()["Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(deployment, latest_version(), strict=True)


def test_kustomization_lists_every_manifest_but_the_secret_example():
    listed = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())["resources"]
    files = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert sorted(listed) == sorted(files)


def test_kubernetes_wiring(monkeypatch):
    m = manifests()
    deployment, service, configmap = m["Deployment"], m["Service"], m["ConfigMap"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}

    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()

    # The shipped config is valid, and its ports are the container's.
    env = {e["name"]: e for e in container["env"]}
    config = proxy_config(configmap["data"]["bluegreen.yaml"], monkeypatch)
    assert (config.listen.port, config.admin.port, config.grpc.port) == (ports["data"], ports["admin"], ports["grpc"])
    assert config.grpc.host == "0.0.0.0"
    assert config.listen.host == config.admin.host == "0.0.0.0"  # probes and Prometheus come from outside the pod
    assert config.admin.token == ADMIN_TOKEN

    # Probes on the admin port.
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}

    # The ConfigMap mounted as a directory (a subPath mount never sees updates).
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {v["mountPath"]: v for v in container["volumeMounts"]}
    config_mount = mounts["/etc/bluegreen"]
    assert "subPath" not in config_mount and not any("subPath" in v for v in container["volumeMounts"])
    assert volumes[config_mount["name"]]["configMap"]["name"] == configmap["metadata"]["name"]
    assert container["args"][-1] == "/etc/bluegreen/bluegreen.yaml"
    assert "bluegreen.yaml" in configmap["data"]

    # Secrets via env from the Secret; nothing secret in the ConfigMap. Clients authenticate with its keys.
    secret = m["Secret"]
    for name in ("BLUEGREEN_ADMIN_TOKEN", "QDRANT_API_KEY", "BLUEGREEN_READER_KEY", "BLUEGREEN_INGEST_KEY"):
        reference = env[name]["valueFrom"]["secretKeyRef"]
        assert reference["name"] == secret["metadata"]["name"] and reference["key"] in secret["stringData"]
    assert "${BLUEGREEN_ADMIN_TOKEN}" in configmap["data"]["bluegreen.yaml"]
    assert {key.key.get_secret_value() for key in config.clients.api_keys} == {
        DEPLOYMENT_ENV["BLUEGREEN_READER_KEY"], DEPLOYMENT_ENV["BLUEGREEN_INGEST_KEY"]}

    # Non-root, read-only root filesystem; the state in Qdrant, no volume claim.
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert (config.state.store, config.state.collection) == ("qdrant", "bluegreen_state")
    assert "PersistentVolumeClaim" not in m and not any("persistentVolumeClaim" in v for v in pod["volumes"])
    assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]

    # The Service: the data ports only, on Qdrant's numbers (REST 6333, gRPC 6334), so clients change the host only.
    service_ports = {port["name"]: port for port in service["spec"]["ports"]}
    assert set(service_ports) == {"http", "grpc"}
    assert (service_ports["http"]["port"], service_ports["http"]["targetPort"]) == (6333, "data")
    grpc_port = service_ports["grpc"]
    assert (grpc_port["port"], grpc_port["targetPort"], grpc_port["appProtocol"]) == (6334, "grpc", "grpc")
    assert service["spec"]["selector"].items() <= labels.items()

    # The PodDisruptionBudget keeps one replica.
    pdb = m["PodDisruptionBudget"]
    assert pdb["spec"]["minAvailable"] == 1 and pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()

    # The NetworkPolicy: the admin port only from Prometheus pods; the data port open.
    policy = m["NetworkPolicy"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    rules = policy["spec"]["ingress"]
    by_port = {port["port"]: rule for rule in rules for port in rule["ports"]}
    assert set(by_port) == {ports["data"], ports["grpc"], ports["admin"]}
    assert "from" not in by_port[ports["data"]] and "from" not in by_port[ports["grpc"]]
    admin_sources = by_port[ports["admin"]]["from"]
    assert admin_sources and all(source["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}
                                 for source in admin_sources)
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(ports["admin"])


def test_kubernetes_qdrant_ports_reach_only_the_proxy(monkeypatch):
    """Qdrant's REST and gRPC ports, the ones the ConfigMap's upstream names, take connections from the
    proxy's pods only (in Qdrant's namespace, as the upstream's service name says); its peers keep 6335."""
    m = manifests()
    policy = m[QDRANT_POLICY]
    proxy_labels = m["Deployment"]["spec"]["template"]["metadata"]["labels"]
    config = proxy_config(m["ConfigMap"]["data"]["bluegreen.yaml"], monkeypatch)
    rest = urlsplit(config.upstream.url)
    grpc_host, grpc_port = config.upstream.grpc_target.rsplit(":", 1)
    assert rest.hostname == grpc_host and (rest.port, int(grpc_port)) == (6333, 6334)
    assert policy["metadata"]["namespace"] == rest.hostname.split(".")[1]  # <service>.<namespace>.svc...
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "qdrant"}
    by_port = {port["port"]: rule for rule in policy["spec"]["ingress"] for port in rule["ports"]}
    assert set(by_port) == {6333, 6334, 6335}
    for port in (6333, 6334):
        sources = by_port[port]["from"]
        assert sources and all(source["podSelector"]["matchLabels"].items() <= proxy_labels.items() for source in sources)
    assert by_port[6335]["from"] == [{"podSelector": policy["spec"]["podSelector"]}]  # Qdrant's peers only


def test_kubernetes_termination_waits_for_the_prestop_pause_and_the_proxys_grace(monkeypatch):
    """The kubelet runs preStop (endpoints drain meanwhile), then SIGTERM: the proxy's grace time and
    its admin listener's close must fit in what is left of terminationGracePeriodSeconds."""
    m = manifests()
    pod = m["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pause = float(command[1])
    assert pause >= 5, "long enough for kube-proxy and ingresses to drop the endpoint"
    config = proxy_config(m["ConfigMap"]["data"]["bluegreen.yaml"], monkeypatch)
    assert config.shutdown_grace_period >= config.upstream.timeout
    after_grace = CUT_OFF_ANSWER_SECONDS + ADMIN_GRACE_SECONDS
    assert pod["terminationGracePeriodSeconds"] >= pause + config.shutdown_grace_period + after_grace


def test_compose_stop_grace_covers_the_proxys_grace(monkeypatch):
    proxy = compose()["services"]["proxy"]
    config = proxy_config((DEPLOY / "compose" / "bluegreen.yaml").read_text(), monkeypatch)
    assert config.shutdown_grace_period >= config.upstream.timeout
    assert parse_duration(proxy["stop_grace_period"]) >= config.shutdown_grace_period + CUT_OFF_ANSWER_SECONDS + ADMIN_GRACE_SECONDS


def test_kubernetes_file_store_component(monkeypatch):
    """The alternative: the file store on a ReadWriteMany claim, as the file-store component patches it in."""
    component = yaml.safe_load((KUBERNETES / "file-store" / "kustomization.yaml").read_text())
    assert component["kind"] == "Component"
    claim = yaml.safe_load((KUBERNETES / "file-store" / component["resources"][0]).read_text())
    kubernetes_validate.validate(claim, latest_version(), strict=True)
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"], "replicas share the state file"
    operations = yaml.safe_load(component["patches"][0]["patch"])
    added = {operation["path"].rsplit("/", 2)[-2]: operation["value"] for operation in operations if operation["op"] == "add"}
    env = {o["value"]["name"]: o["value"]["value"] for o in operations if o["path"].endswith("/env/-")}
    assert added["volumes"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert Path(env["BLUEGREEN_STATE_FILE"]).parent == Path(added["volumeMounts"]["mountPath"])
    config = proxy_config(manifests()["ConfigMap"]["data"]["bluegreen.yaml"], monkeypatch, **env)
    assert (config.state.store, config.state.path) == ("file", env["BLUEGREEN_STATE_FILE"])


# ------------------------------------------------------------------ the shipped configs, running

def shipped_configs() -> dict[str, str]:
    return {
        "compose": (DEPLOY / "compose" / "bluegreen.yaml").read_text(),
        "kubernetes": manifests()["ConfigMap"]["data"]["bluegreen.yaml"],
    }


@pytest.mark.slow  # the shipped config served by a proxy process
@pytest.mark.parametrize("where", ["compose", "kubernetes"])
def test_shipped_config_serves_probes_and_keeps_state_outside_its_directory(where, tmp_path):
    """The config as the container sees it: in a directory of its own (a read-only mount there), the
    token from the environment, the state file where BLUEGREEN_STATE_FILE points. Its upstream is not
    reachable here: the probes answer all the same, and an operator's rollback lands in the state file,
    where the next process (a new pod on the same volume) finds it. Its gRPC listener (moved to a free
    loopback port here) authenticates clients and answers UNAVAILABLE for the unreachable upstream."""
    config_dir, state_dir = tmp_path / "etc-bluegreen", tmp_path / "var-lib-bluegreen"
    config_dir.mkdir()
    state_dir.mkdir()
    data_port, admin_port, grpc_port = free_port(), free_port(), free_port()
    shipped_grpc = "grpc: {host: 0.0.0.0, port: 6334}"
    assert shipped_grpc in shipped_configs()[where]
    (config_dir / "bluegreen.yaml").write_text(
        shipped_configs()[where].replace(shipped_grpc, f"grpc: {{host: 127.0.0.1, port: {grpc_port}}}"))
    admin_url = f"http://127.0.0.1:{admin_port}"
    env = {**DEPLOYMENT_ENV, "BLUEGREEN_STATE_FILE": str(state_dir / "bluegreen.state.json"), "QDRANT_API_KEY": "",
           "BLUEGREEN_STATE_STORE": "file"}  # the Qdrant store (the default) needs a reachable upstream

    def proxy_process() -> ServerProcess:
        return ServerProcess(
            [sys.executable, "-m", "proxy.cli", "serve", "--config", str(config_dir / "bluegreen.yaml"),
             "--listen", f"127.0.0.1:{data_port}", "--admin", f"127.0.0.1:{admin_port}"],
            ready_url=admin_url + "/healthz", log_path=tmp_path / "proxy.log", env=env,
        )

    def admin(path: str) -> dict:
        with urllib.request.urlopen(admin_url + path, timeout=5) as response:
            assert response.status == 200
            return json.loads(response.read())

    with proxy_process():
        ready = admin("/readyz")
        assert ready["ready"] is True
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            collections = qgrpc.CollectionsStub(channel)
            for metadata, code in (((), grpc.StatusCode.UNAUTHENTICATED),
                                   ((("api-key", DEPLOYMENT_ENV["BLUEGREEN_READER_KEY"]),), grpc.StatusCode.UNAVAILABLE)):
                with pytest.raises(grpc.RpcError) as raised:
                    collections.List(qgrpc.ListCollectionsRequest(), metadata=metadata, timeout=10)
                assert raised.value.code() == code, raised.value.details()
        route = next(iter(ready["routes"]))
        request = urllib.request.Request(
            f"{admin_url}/admin/routes/{route}/rollback", data=b'{"reason": "deploy test"}', method="POST",
            headers={"authorization": f"Bearer {ADMIN_TOKEN}", "content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read())["state"] == "rolled_back"
    assert "deploy test" in (state_dir / "bluegreen.state.json").read_text()
    with proxy_process():  # a new pod on the same volume
        restored = admin("/admin/routes")["routes"][route]
    assert (restored["state"], restored["detail"]) == ("rolled_back", "deploy test")
    assert sorted(p.name for p in config_dir.iterdir()) == ["bluegreen.yaml"], "nothing written beside the config"
    assert ADMIN_TOKEN not in (tmp_path / "proxy.log").read_text()


@pytest.mark.parametrize("where", ["compose", "kubernetes"])
def test_shipped_config_passes_the_proxys_own_check(where, tmp_path):
    """`bluegreen-proxy check` on each shipped config, with the environment its deployment gives it:
    valid, and no warning (the data port listens on 0.0.0.0, so clients authenticate at the proxy)."""
    config = tmp_path / "bluegreen.yaml"
    config.write_text(shipped_configs()[where])
    done = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "check", "--config", str(config)],
        capture_output=True, text=True, cwd=REPO_ROOT, env={**os.environ, **DEPLOYMENT_ENV}, timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARNING" not in done.stdout + done.stderr
    assert "clients: 2 api key(s), no jwt, anonymous none" in done.stdout
    assert "grpc 0.0.0.0:6334 -> " in done.stdout  # the gRPC listener, on Qdrant's port
    for secret in DEPLOYMENT_ENV.values():
        assert secret not in done.stdout + done.stderr


@pytest.mark.slow  # the compose demo's upstream, proxy and traffic
def test_compose_demo_builds_both_colours_and_sends_traffic_through_the_proxy(tmp_path, embedded_upstream):
    """deploy/compose-demo/traffic.py, as the demo profile runs it (its key from the environment), against
    the embedded upstream and a proxy that authenticates clients as the shipped compose config does."""
    tag = uuid.uuid4().hex[:8]
    route, blue, green = f"demo_{tag}", f"demo_{tag}_v1", f"demo_{tag}_v2"
    routes = f"  {route}:\n    blue: {blue}\n    green: {green}\n    green_percent: 50\n    preflight: {{recheck: 1s}}\n"
    clients = "clients: {api_keys: [{key: demo-reader-key, access: r}], anonymous: none}\n"
    with RunningProxy(tmp_path / "proxy", embedded_upstream, routes, extra_yaml=clients) as proxy:
        done = subprocess.run(
            [sys.executable, str(DEPLOY / "compose-demo" / "traffic.py"), "--qdrant", embedded_upstream, "--proxy", proxy.url,
             "--route", route, "--blue", blue, "--green", green, "--points", "300", "--dim", "16",
             "--rate", "60", "--users", "200", "--duration", "4"],
            capture_output=True, text=True, timeout=120, env={**os.environ, "BLUEGREEN_API_KEY": "demo-reader-key"},
        )
        assert done.returncode == 0, done.stdout + done.stderr
        served = json.loads(done.stdout.strip().splitlines()[-1].removeprefix("served: "))
        routes_document = proxy.admin_json()
    assert f"{blue}: 300 points of 16 dimensions" in done.stdout and f"{green}: 300 points" in done.stdout
    # Green holds blue's point count, so its preflight passes and it gets its share of the reads.
    assert routes_document["routes"][route]["state"] == "active"
    assert set(served) == {"blue", "green"}, served
    assert served["green"] > 0.2 * sum(served.values())
    direct = qdrant_client(embedded_upstream)
    assert direct.count(blue).count == direct.count(green).count == 300
    direct.close()
