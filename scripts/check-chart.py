#!/usr/bin/env python3
"""Checks of the Floe Helm chart, run by scripts/check-chart.sh in its tool venv.

    check-chart.py values-comments VALUES_YAML
        every key of the values file (at any depth) has a comment line right above it
    check-chart.py manifests SCENARIO RENDERED_YAML [--kube-versions 1.25.0,1.37.0]
        the rendered manifests of one scenario: Kubernetes JSON schemas (kubernetes-validate,
        strict: unknown fields are errors) for each Kubernetes version, the chart's own
        consistency rules, and the scenario's expectations
    check-chart.py same-checksum A_YAML B_YAML / differ-checksum A_YAML B_YAML
        the Deployment's checksum/config annotation is equal / differs between two renders
    check-chart.py kind-count RENDERED_YAML KIND N
        the render holds exactly N resources of KIND
    check-chart.py change-config VALUES_YAML OUT_YAML
        writes a values file whose config differs from the default one in one value
    check-chart.py extract-config RENDERED_YAML OUT_TOML
        writes the ConfigMap's connector.toml, prints the Deployment container's literal
        environment as NAME=VALUE lines (for `floe policy` to load the config as a pod would)

Prints one line per problem and exits 1 when there is any.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

CONFIG_PATH = "/etc/floe/connector.toml"
STANDARD_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
)
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


class Problems:
    def __init__(self, where: str):
        self.where = where
        self.items: list[str] = []

    def add(self, what: str, message: str) -> None:
        self.items.append(f"{self.where}: {what}: {message}")

    def check(self, ok: object, what: str, message: str) -> bool:
        if not ok:
            self.add(what, message)
        return bool(ok)

    def finish(self, summary: str) -> int:
        for line in self.items:
            print(f"FAIL {line}")
        if self.items:
            print(f"{self.where}: {len(self.items)} problem(s)")
            return 1
        print(f"ok   {self.where}: {summary}")
        return 0


# ------------------------------------------------------------------ values.yaml documented


def values_comments(path: Path) -> int:
    p = Problems(str(path))
    text = path.read_text()
    lines = text.splitlines()
    root = yaml.compose(text)
    count = 0

    def walk(node: yaml.Node, dotted: str) -> None:
        nonlocal count
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                name = f"{dotted}.{key.value}" if dotted else str(key.value)
                count += 1
                line = key.start_mark.line  # 0-based
                above = lines[line - 1].strip() if line > 0 else ""
                p.check(
                    above.startswith("#"),
                    name,
                    f"line {line + 1}: no comment on the line above the key",
                )
                walk(value, name)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, f"{dotted}[{i}]")

    if root is None:
        p.add("values", "empty file")
    else:
        walk(root, "")
    return p.finish(f"all {count} keys have a comment above them")


# ------------------------------------------------------------------ helpers


def load_docs(path: Path) -> list[dict]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    for d in docs:
        if not isinstance(d, dict):
            raise SystemExit(f"FAIL {path}: a document is not a mapping: {d!r:.80}")
    return docs


def kn(doc: dict) -> str:
    return f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"


def duration_seconds(text: str) -> float:
    """humantime-style durations as Floe reads them: "30s", "1m 30s", "500ms", "2h"."""
    units = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
    total, pos = 0.0, 0
    for m in re.finditer(r"\s*(\d+(?:\.\d+)?)\s*([a-z]+)", text):
        if m.start() != pos or m.group(2) not in units:
            raise ValueError(f"cannot read duration {text!r}")
        total += float(m.group(1)) * units[m.group(2)]
        pos = m.end()
    if pos != len(text) or pos == 0:
        raise ValueError(f"cannot read duration {text!r}")
    return total


def subset(small: dict, big: dict) -> bool:
    return all(big.get(k) == v for k, v in (small or {}).items())


def find(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d.get("kind") == kind]


def port_of(listen: str) -> int:
    return int(str(listen).rsplit(":", 1)[1])


# ------------------------------------------------------------------ generic checks


def check_schema(p: Problems, docs: list[dict], kube_versions: list[str]) -> None:
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

    for doc in docs:
        if doc.get("apiVersion", "").startswith("monitoring.coreos.com/"):
            continue  # a CRD: checked by check_service_monitor
        for version in kube_versions:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except ValidationError as e:
                path = ".".join(str(x) for x in e.absolute_path) or "(top)"
                p.add(kn(doc), f"Kubernetes {version} schema: {path}: {e.message}")
            except SchemaNotFoundError as e:
                p.add(kn(doc), f"Kubernetes {version}: {e.message}")


def check_metadata(p: Problems, docs: list[dict]) -> None:
    seen = set()
    for doc in docs:
        what = kn(doc)
        p.check(doc.get("apiVersion"), what, "no apiVersion")
        p.check(doc.get("kind"), what, "no kind")
        meta = doc.get("metadata") or {}
        name = meta.get("name") or ""
        pattern = DNS_LABEL if doc.get("kind") in ("Service", "Deployment") else DNS_SUBDOMAIN
        p.check(pattern.match(name), what, f"name {name!r} is not a valid DNS name")
        if doc.get("kind") == "Job":
            # The Job controller adds the job-name label (<= 63 characters) to its pods.
            p.check(len(name) <= 63, what, "Job name longer than 63 characters")
        p.check(meta.get("namespace"), what, "no metadata.namespace")
        labels = meta.get("labels") or {}
        for label in STANDARD_LABELS:
            p.check(label in labels, what, f"label {label} missing")
        key = (doc.get("kind"), meta.get("namespace"), name)
        p.check(key not in seen, what, "rendered twice")
        seen.add(key)


def parse_config(p: Problems, docs: list[dict]) -> dict | None:
    cms = find(docs, "ConfigMap")
    if not p.check(len(cms) == 1, "ConfigMap", f"expected one ConfigMap, found {len(cms)}"):
        return None
    cm = cms[0]
    text = (cm.get("data") or {}).get("connector.toml")
    if not p.check(isinstance(text, str), kn(cm), "no data.connector.toml"):
        return None
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        p.add(kn(cm), f"connector.toml is not valid TOML: {e}")
        return None
    kafka = config.get("kafka", {})
    p.check(kafka.get("brokers"), kn(cm), "connector.toml: kafka.brokers missing")
    p.check(
        ("topics" in kafka) != ("topic_regex" in kafka),
        kn(cm),
        "connector.toml: set exactly one of kafka.topics and kafka.topic_regex",
    )
    catalog = config.get("catalog", {})
    ctype = catalog.get("type")
    p.check(
        ctype in ("s3tables", "rest", "local"),
        kn(cm),
        f"connector.toml: catalog.type {ctype!r} is not s3tables, rest or local",
    )
    if ctype in ("s3tables", "rest"):
        p.check(
            config.get("staging", {}).get("bucket"),
            kn(cm),
            f"connector.toml: staging.bucket is required with catalog type {ctype}",
        )
    if ctype == "s3tables":
        p.check(catalog.get("table_bucket_arn"), kn(cm), "connector.toml: table_bucket_arn missing")
    return config


def check_pod(p: Problems, owner: dict, docs: list[dict], config: dict | None) -> dict:
    """Checks one workload's pod template; returns its single container."""
    what = kn(owner)
    template = owner["spec"]["template"]
    spec = template["spec"]
    containers = spec.get("containers") or []
    if not p.check(len(containers) == 1, what, f"expected one container, found {len(containers)}"):
        return {}
    c = containers[0]

    # Volumes and mounts.
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    p.check(
        len(volumes) == len(spec.get("volumes") or []), what, "two volumes with one name"
    )
    mounts = c.get("volumeMounts") or []
    for m in mounts:
        p.check(m["name"] in volumes, what, f"volumeMount {m['name']!r} names no volume")
    paths = [m["mountPath"] for m in mounts]
    p.check(len(paths) == len(set(paths)), what, "two volumeMounts at one path")
    by_path = {m["mountPath"]: m for m in mounts}

    # The config file: mounted from the chart's ConfigMap where --config points.
    args = c.get("args") or []
    p.check(
        args[1:3] == ["--config", CONFIG_PATH], what, f"args {args} do not pass --config {CONFIG_PATH}"
    )
    cm_names = {d["metadata"]["name"] for d in find(docs, "ConfigMap")}
    cfg_mount = by_path.get(str(Path(CONFIG_PATH).parent))
    if p.check(cfg_mount, what, f"nothing mounted at {Path(CONFIG_PATH).parent}"):
        p.check(cfg_mount.get("readOnly") is True, what, "config mount is not readOnly")
        vol = volumes.get(cfg_mount["name"], {})
        cmv = vol.get("configMap") or {}
        p.check(cmv.get("name") in cm_names, what, f"config volume names ConfigMap {cmv.get('name')!r}, not one of the chart's")
        items = {i["key"]: i["path"] for i in cmv.get("items") or []}
        p.check(
            items.get("connector.toml") == Path(CONFIG_PATH).name,
            what,
            f"config volume does not put connector.toml at {CONFIG_PATH}",
        )

    # Read-only root filesystem with emptyDirs for scratch space.
    for path in ("/tmp", "/var/lib/floe"):
        m = by_path.get(path)
        if p.check(m, what, f"no volume mounted at {path}"):
            p.check("emptyDir" in volumes.get(m["name"], {}), what, f"{path} is not an emptyDir")

    # Security: non-root, read-only root filesystem, no privilege escalation.
    psc = spec.get("securityContext") or {}
    csc = c.get("securityContext") or {}
    p.check(
        csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, what, "runAsNonRoot is not true"
    )
    uid = csc.get("runAsUser", psc.get("runAsUser"))
    p.check(uid not in (0, None), what, f"runAsUser is {uid!r}")
    p.check(csc.get("readOnlyRootFilesystem") is True, what, "readOnlyRootFilesystem is not true")
    p.check(csc.get("allowPrivilegeEscalation") is False, what, "allowPrivilegeEscalation is not false")
    p.check("ALL" in ((csc.get("capabilities") or {}).get("drop") or []), what, "capabilities not dropped")
    p.check(c.get("resources"), what, "no resources")

    # ServiceAccount: the chart's own when it renders one.
    sas = [d["metadata"]["name"] for d in find(docs, "ServiceAccount")]
    san = spec.get("serviceAccountName")
    if sas:
        p.check(san in sas, what, f"serviceAccountName {san!r} is not the chart's ServiceAccount {sas}")
    else:
        p.check(san, what, "no serviceAccountName")

    # Environment: no duplicates; secret references name something.
    env = c.get("env") or []
    names = [e["name"] for e in env]
    dups = sorted({n for n in names if names.count(n) > 1})
    p.check(not dups, what, f"environment variables set twice: {dups}")
    for e in env:
        ref = ((e.get("valueFrom") or {}).get("secretKeyRef")) or None
        if ref is not None:
            p.check(ref.get("name") and ref.get("key"), what, f"{e['name']}: secretKeyRef without name or key")
    for ef in c.get("envFrom") or []:
        ref = ef.get("secretRef") or ef.get("configMapRef") or {}
        p.check(ref.get("name"), what, "envFrom without a name")

    # The metrics listener: env override, TOML and container port agree.
    envmap = {e["name"]: e.get("value") for e in env}
    ports = {pt.get("name"): pt["containerPort"] for pt in c.get("ports") or []}
    listen_env = envmap.get("FLOE_METRICS__LISTEN")
    if p.check(listen_env, what, "FLOE_METRICS__LISTEN not set"):
        if owner["kind"] == "Deployment":
            p.check(
                port_of(listen_env) == ports.get("metrics"),
                what,
                f"FLOE_METRICS__LISTEN {listen_env} is not the metrics container port {ports.get('metrics')}",
            )
    p.check(envmap.get("FLOE_METRICS__ENABLED") == "true", what, "FLOE_METRICS__ENABLED is not \"true\"")
    if config is not None:
        metrics = config.get("metrics", {})
        if "listen" in metrics and listen_env:
            p.check(
                port_of(metrics["listen"]) == port_of(listen_env),
                what,
                f"connector.toml [metrics] listen {metrics['listen']} is not FLOE_METRICS__LISTEN {listen_env}",
            )
        drain = config.get("flush", {}).get("drain_timeout", "30s")
        grace = spec.get("terminationGracePeriodSeconds", 30)
        try:
            p.check(
                grace > duration_seconds(drain),
                what,
                f"terminationGracePeriodSeconds {grace} does not exceed flush.drain_timeout {drain}",
            )
        except ValueError as e:
            p.add(what, str(e))
    return c


def check_deployment(p: Problems, docs: list[dict], config: dict | None) -> dict | None:
    deps = find(docs, "Deployment")
    if not p.check(len(deps) == 1, "Deployment", f"expected one Deployment, found {len(deps)}"):
        return None
    d = deps[0]
    what = kn(d)
    spec = d["spec"]
    tmpl_labels = spec["template"]["metadata"].get("labels") or {}
    p.check(
        subset(spec["selector"]["matchLabels"], tmpl_labels),
        what,
        "selector does not match the pod template's labels",
    )
    ann = spec["template"]["metadata"].get("annotations") or {}
    p.check(
        re.fullmatch(r"[0-9a-f]{64}", str(ann.get("checksum/config", ""))),
        what,
        "no sha256 checksum/config pod annotation",
    )
    c = check_pod(p, d, docs, config)
    if not c:
        return d
    p.check((c.get("args") or [None])[0] == "run", what, f"args {c.get('args')} do not start with run")
    ports = {pt.get("name"): pt["containerPort"] for pt in c.get("ports") or []}
    p.check("metrics" in ports, what, "no container port named metrics")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = (c.get(probe) or {}).get("httpGet") or {}
        if p.check(get, what, f"no {probe} httpGet"):
            p.check(get.get("path") == path, what, f"{probe} path {get.get('path')!r}, expected {path}")
            port = get.get("port")
            p.check(
                port in ports or port in ports.values(), what, f"{probe} port {port!r} is no container port"
            )
    return d


def check_jobs(p: Problems, docs: list[dict], config: dict | None) -> None:
    for job in find(docs, "Job"):
        what = kn(job)
        spec = job["spec"]
        p.check(spec["template"]["spec"].get("restartPolicy") == "Never", what, "restartPolicy is not Never")
        p.check(isinstance(spec.get("backoffLimit"), int), what, "no backoffLimit")
        c = check_pod(p, job, docs, config)
        if not c:
            continue
        args = c.get("args") or []
        p.check(args[:1] == ["backfill"], what, f"args {args} do not start with backfill")
        if "--drop-and-recreate" in args:
            p.check("--yes" in args, what, "--drop-and-recreate without --yes (no terminal to confirm on)")
        if "--tables" in args:
            i = args.index("--tables")
            tables = args[i + 1].split(",") if i + 1 < len(args) else []
            p.check(
                tables and all(re.fullmatch(r"[^.,\s]+\.[^.,\s]+", t) for t in tables),
                what,
                f"--tables value {args[i + 1:i + 2]} is not namespace.table[,namespace.table...]",
            )
        p.check(not c.get("livenessProbe") and not c.get("readinessProbe"), what, "a Job with probes")


def check_service(p: Problems, docs: list[dict], deployment: dict | None) -> None:
    for svc in find(docs, "Service"):
        what = kn(svc)
        sel = svc["spec"].get("selector") or {}
        p.check(sel, what, "no selector")
        if deployment is None:
            continue
        pod = deployment["spec"]["template"]
        p.check(subset(sel, pod["metadata"]["labels"]), what, "selector does not match the Deployment's pods")
        for job in find(docs, "Job"):
            p.check(
                not subset(sel, job["spec"]["template"]["metadata"]["labels"]),
                what,
                f"selector also matches the pods of {kn(job)}",
            )
        cports = {pt.get("name"): pt["containerPort"] for pt in pod["spec"]["containers"][0].get("ports") or []}
        for port in svc["spec"].get("ports") or []:
            target = port.get("targetPort", port["port"])
            p.check(
                target in cports or target in cports.values(),
                what,
                f"targetPort {target!r} is no container port of the Deployment",
            )


def check_pdb(p: Problems, docs: list[dict], deployment: dict | None) -> None:
    for pdb in find(docs, "PodDisruptionBudget"):
        what = kn(pdb)
        spec = pdb["spec"]
        p.check(("minAvailable" in spec) != ("maxUnavailable" in spec), what, "set exactly one of minAvailable and maxUnavailable")
        if deployment is not None:
            p.check(
                subset(spec["selector"]["matchLabels"], deployment["spec"]["template"]["metadata"]["labels"]),
                what,
                "selector does not match the Deployment's pods",
            )
        for job in find(docs, "Job"):
            p.check(
                not subset(spec["selector"]["matchLabels"], job["spec"]["template"]["metadata"]["labels"]),
                what,
                f"selector also matches the pods of {kn(job)}",
            )


def check_service_monitor(p: Problems, docs: list[dict]) -> None:
    services = find(docs, "Service")
    for sm in find(docs, "ServiceMonitor"):
        what = kn(sm)
        p.check(sm.get("apiVersion") == "monitoring.coreos.com/v1", what, "apiVersion is not monitoring.coreos.com/v1")
        spec = sm.get("spec") or {}
        match = (spec.get("selector") or {}).get("matchLabels") or {}
        targets = [s for s in services if subset(match, s["metadata"].get("labels") or {})]
        namespaces = (spec.get("namespaceSelector") or {}).get("matchNames") or [sm["metadata"]["namespace"]]
        targets = [s for s in targets if s["metadata"]["namespace"] in namespaces]
        if not p.check(len(targets) == 1, what, f"selects {len(targets)} of the chart's Services, expected 1"):
            continue
        port_names = {pt.get("name") for pt in targets[0]["spec"]["ports"]}
        endpoints = spec.get("endpoints") or []
        p.check(endpoints, what, "no endpoints")
        for ep in endpoints:
            p.check(ep.get("port") in port_names, what, f"endpoint port {ep.get('port')!r} is not a port name of {kn(targets[0])}")
            p.check(ep.get("path", "/metrics") == "/metrics", what, f"endpoint path {ep.get('path')!r}")
            if "interval" in ep and "scrapeTimeout" in ep:
                p.check(
                    duration_seconds(ep["scrapeTimeout"]) <= duration_seconds(ep["interval"]),
                    what,
                    "scrapeTimeout exceeds interval",
                )


# ------------------------------------------------------------------ scenarios


def kinds(docs: list[dict]) -> set[str]:
    return {d["kind"] for d in docs}


def container(docs: list[dict], kind: str) -> dict:
    return find(docs, kind)[0]["spec"]["template"]["spec"]["containers"][0]


def expect_default(p: Problems, docs: list[dict]) -> None:
    p.check(
        kinds(docs) == {"ServiceAccount", "ConfigMap", "Service", "Deployment"},
        "scenario",
        f"kinds {sorted(kinds(docs))}, expected ServiceAccount, ConfigMap, Service, Deployment",
    )
    p.check(find(docs, "Deployment")[0]["spec"]["replicas"] == 1, "scenario", "replicas is not 1")
    p.check(not container(docs, "Deployment").get("envFrom"), "scenario", "envFrom without a Secret")


def expect_backfill(p: Problems, docs: list[dict]) -> None:
    jobs = find(docs, "Job")
    if not p.check(len(jobs) == 1, "scenario", f"expected one backfill Job, found {len(jobs)}"):
        return
    job = jobs[0]
    args = container(docs, "Job")["args"]
    for a in ("--drop-and-recreate", "--yes", "--tables", "inventory.customers,inventory.orders"):
        p.check(a in args, "scenario", f"backfill args {args} lack {a}")
    p.check(job["spec"].get("ttlSecondsAfterFinished") == 3600, "scenario", "ttlSecondsAfterFinished is not 3600")
    p.check(job["spec"].get("backoffLimit") == 0, "scenario", "backoffLimit is not 0")
    ann = job["metadata"].get("annotations") or {}
    p.check(not any(k.startswith("helm.sh/hook") for k in ann), "scenario", "hook annotations without backfill.hook.enabled")
    p.check(find(docs, "Deployment")[0]["spec"]["replicas"] == 0, "scenario", "replicas is not 0")


def expect_backfill_hook(p: Problems, docs: list[dict]) -> None:
    jobs = find(docs, "Job")
    if not p.check(len(jobs) == 1, "scenario", f"expected one backfill Job, found {len(jobs)}"):
        return
    ann = jobs[0]["metadata"].get("annotations") or {}
    p.check(ann.get("helm.sh/hook") == "post-install,post-upgrade", "scenario", f"helm.sh/hook is {ann.get('helm.sh/hook')!r}")
    p.check(ann.get("helm.sh/hook-delete-policy") == "before-hook-creation", "scenario", "no hook delete policy")
    args = container(docs, "Job")["args"]
    p.check("--drop-and-recreate" not in args and "--tables" not in args, "scenario", f"unexpected backfill args {args}")
    p.check("ttlSecondsAfterFinished" not in jobs[0]["spec"], "scenario", "ttlSecondsAfterFinished set although empty")


def expect_servicemonitor(p: Problems, docs: list[dict]) -> None:
    sms = find(docs, "ServiceMonitor")
    if not p.check(len(sms) == 1, "scenario", f"expected one ServiceMonitor, found {len(sms)}"):
        return
    p.check(sms[0]["metadata"]["labels"].get("release") == "prometheus", "scenario", "serviceMonitor.labels not applied")
    p.check(sms[0]["spec"]["endpoints"][0].get("interval") == "15s", "scenario", "interval is not 15s")


def expect_secret_irsa(p: Problems, docs: list[dict]) -> None:
    c = container(docs, "Deployment")
    refs = [ef.get("secretRef", {}).get("name") for ef in c.get("envFrom") or []]
    p.check(refs == ["floe-secrets"], "scenario", f"envFrom secretRefs {refs}, expected [floe-secrets]")
    sa = find(docs, "ServiceAccount")
    if p.check(len(sa) == 1, "scenario", "no ServiceAccount"):
        role = (sa[0]["metadata"].get("annotations") or {}).get("eks.amazonaws.com/role-arn")
        p.check(role == "arn:aws:iam::111122223333:role/floe", "scenario", f"role-arn annotation {role!r}")
    env = {e["name"]: e for e in c.get("env") or []}
    p.check(env.get("AWS_REGION", {}).get("value") == "us-east-1", "scenario", "extraEnv AWS_REGION missing")


def expect_secret_keys(p: Problems, docs: list[dict]) -> None:
    c = container(docs, "Deployment")
    p.check(not c.get("envFrom"), "scenario", "envFrom set although secret.keys picks keys")
    env = {e["name"]: e for e in c.get("env") or []}
    ref = ((env.get("FLOE_CATALOG__TOKEN") or {}).get("valueFrom") or {}).get("secretKeyRef") or {}
    p.check(ref == {"name": "floe-secrets", "key": "catalog-token"}, "scenario", f"FLOE_CATALOG__TOKEN secretKeyRef {ref}")
    p.check(not find(docs, "ServiceAccount"), "scenario", "ServiceAccount rendered with serviceAccount.create=false")
    san = find(docs, "Deployment")[0]["spec"]["template"]["spec"].get("serviceAccountName")
    p.check(san == "floe-existing", "scenario", f"serviceAccountName {san!r}, expected floe-existing")


def expect_replicas3(p: Problems, docs: list[dict]) -> None:
    p.check(find(docs, "Deployment")[0]["spec"]["replicas"] == 3, "scenario", "replicas is not 3")
    pdbs = find(docs, "PodDisruptionBudget")
    if p.check(len(pdbs) == 1, "scenario", f"expected one PodDisruptionBudget, found {len(pdbs)}"):
        p.check(pdbs[0]["spec"].get("maxUnavailable") == 1, "scenario", "PDB maxUnavailable is not 1")
    spec = find(docs, "Deployment")[0]["spec"]["template"]["spec"]
    p.check(spec.get("topologySpreadConstraints"), "scenario", "topologySpreadConstraints not applied")
    p.check(spec.get("nodeSelector") and spec.get("tolerations") and spec.get("affinity"), "scenario", "nodeSelector/tolerations/affinity not applied")
    c = container(docs, "Deployment")
    mounts = {m["name"] for m in c.get("volumeMounts") or []}
    p.check("ca-bundle" in mounts, "scenario", "extraVolumeMounts not applied")


def expect_example_config(p: Problems, docs: list[dict]) -> None:
    expect_default(p, docs)
    text = find(docs, "ConfigMap")[0]["data"]["connector.toml"]
    p.check("[[tables.route]]" in text, "scenario", "the ConfigMap does not hold connector.toml.example")


SCENARIOS = {
    "default": expect_default,
    "example-config": expect_example_config,
    "backfill": expect_backfill,
    "backfill-hook": expect_backfill_hook,
    "servicemonitor": expect_servicemonitor,
    "secret-irsa": expect_secret_irsa,
    "secret-keys": expect_secret_keys,
    "replicas3": expect_replicas3,
}


def manifests(scenario: str, path: Path, kube_versions: list[str]) -> int:
    p = Problems(f"{scenario} ({path.name})")
    docs = load_docs(path)
    if not docs:
        p.add("render", "no manifests")
        return p.finish("")
    check_metadata(p, docs)
    check_schema(p, docs, kube_versions)
    config = parse_config(p, docs)
    deployment = check_deployment(p, docs, config)
    check_jobs(p, docs, config)
    check_service(p, docs, deployment)
    check_pdb(p, docs, deployment)
    check_service_monitor(p, docs)
    expect = SCENARIOS.get(scenario)
    if p.check(expect, "scenario", f"unknown scenario (known: {', '.join(SCENARIOS)})"):
        expect(p, docs)
    return p.finish(
        f"{len(docs)} manifests ({', '.join(kn(d) for d in docs)}), "
        f"schemas of Kubernetes {', '.join(kube_versions)}"
    )


def checksum(path: Path) -> str:
    dep = find(load_docs(path), "Deployment")[0]
    return dep["spec"]["template"]["metadata"]["annotations"]["checksum/config"]


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "values-comments":
        return values_comments(Path(argv[1]))
    if len(argv) >= 3 and argv[0] == "manifests":
        versions = ["1.25.0", "1.37.0"]
        if len(argv) >= 5 and argv[3] == "--kube-versions":
            versions = argv[4].split(",")
        return manifests(argv[1], Path(argv[2]), versions)
    if len(argv) == 3 and argv[0] in ("same-checksum", "differ-checksum"):
        a, b = checksum(Path(argv[1])), checksum(Path(argv[2]))
        want_same = argv[0] == "same-checksum"
        ok = (a == b) == want_same
        verdict = "equal" if a == b else "different"
        print(f"{'ok  ' if ok else 'FAIL'} checksum/config of {Path(argv[1]).name} and {Path(argv[2]).name}: {verdict}")
        return 0 if ok else 1
    if len(argv) == 4 and argv[0] == "kind-count":
        n = len(find(load_docs(Path(argv[1])), argv[2]))
        ok = n == int(argv[3])
        print(f"{'ok  ' if ok else 'FAIL'} {Path(argv[1]).name}: {n} {argv[2]}, expected {argv[3]}")
        return 0 if ok else 1
    if len(argv) == 3 and argv[0] == "extract-config":
        docs = load_docs(Path(argv[1]))
        Path(argv[2]).write_text(find(docs, "ConfigMap")[0]["data"]["connector.toml"])
        for e in container(docs, "Deployment").get("env") or []:
            if "value" in e:
                print(f"{e['name']}={e['value']}")
        return 0
    if len(argv) == 3 and argv[0] == "change-config":
        values = yaml.safe_load(Path(argv[1]).read_text())
        changed = values["config"].replace('interval = "10s"', 'interval = "20s"', 1)
        if changed == values["config"]:
            print('FAIL change-config: the default config has no interval = "10s" to change')
            return 1
        Path(argv[2]).write_text(yaml.safe_dump({"config": changed}))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
