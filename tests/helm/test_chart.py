"""The Helm chart in helm/mailpipe.

Runs everywhere (no cluster, no network):

* values.yaml and every ci/*.yaml (merged over values.yaml the way Helm merges them) validate
  against values.schema.json, and deliberately wrong values are rejected;
* every value a template reads exists in values.yaml, and every value in values.yaml is read;
* every MAILPIPE_* name the chart sets is a real setting in :mod:`pipeline.settings`, and the
  roles and queues the chart knows are the application's.

Where a Helm engine is available (a ``helm`` binary on PATH, else the ``helm-python-sdk``
package, which embeds Helm's Go SDK), the chart is also linted like chart-testing does
(``helm lint --strict`` with each ci/*.yaml) and rendered, and the manifests are checked: one
Deployment per role, hardened pods, drain-aware grace periods, no secret values. Without an
engine only those tests skip, saying why.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from pipeline.settings import ROLES, Settings
from pipeline.topology import QUEUES

CHART = Path(__file__).resolve().parents[2] / "helm" / "mailpipe"
TEMPLATES = CHART / "templates"
CI_FILES = sorted((CHART / "ci").glob("*.yaml"))

#: values key -> role name (`mailpipe run --role`)
ROLE_KEYS = {
    "ingest": "ingest",
    "scheduler": "scheduler",
    "sendNoAttachments": "send-no-attachments",
    "sendAttachments": "send-attachments",
    "backup": "backup",
}
GRAPH_ROLES = {"send-no-attachments", "send-attachments", "backup"}
#: settings that hold a secret: the chart may only ever take them from a Secret (or a file path)
SECRET_SETTINGS = {
    "MAILPIPE_DATABASE_URL",
    "MAILPIPE_AMQP_URL",
    "MAILPIPE_GRAPH_CLIENT_SECRET",
    "MAILPIPE_GRAPH_STATIC_TOKEN",
    "MAILPIPE_ENCRYPTION_KEYS",
    "MAILPIPE_GRAPH_TENANT_ID",
    "MAILPIPE_GRAPH_CLIENT_ID",
}
SETTING_ENV_NAMES = {f"MAILPIPE_{name.upper()}" for name in Settings.model_fields}


# --- helpers ----------------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def helm_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's coalescing of user values over chart defaults: maps merge, a null deletes the key."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = helm_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def camel_to_env(key: str) -> str:
    """What the ConfigMap template does with a config key (`snakecase | upper`)."""
    return "MAILPIPE_" + re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", key).upper()


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    document: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
    return document


@pytest.fixture(scope="module")
def defaults() -> dict[str, Any]:
    values: dict[str, Any] = load_yaml(CHART / "values.yaml")
    return values


def schema_errors(schema: dict[str, Any], values: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{'/'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in validator.iter_errors(values)
    ]


# --- schema -----------------------------------------------------------------------------------


def test_schema_is_a_valid_draft7_schema(schema: dict[str, Any]) -> None:
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["additionalProperties"] is False


def test_default_values_match_the_schema(schema: dict[str, Any], defaults: dict[str, Any]) -> None:
    assert schema_errors(schema, defaults) == []


def test_there_are_ci_value_files() -> None:
    assert CI_FILES, "helm/mailpipe/ci/*.yaml: no sample override files"


@pytest.mark.parametrize("path", CI_FILES, ids=lambda p: p.name)
def test_ci_values_match_the_schema(path: Path, schema: dict[str, Any], defaults: dict[str, Any]) -> None:
    override = load_yaml(path) or {}
    assert schema_errors(schema, helm_merge(defaults, override)) == []


BAD_VALUES: list[tuple[str, dict[str, Any], str]] = [
    ("misspelt top-level key", {"replicaCount": 3}, "replicaCount"),
    ("misspelt role key", {"roles": {"ingest": {"replica": 3}}}, "replica"),
    ("unknown role", {"roles": {"sender": {"enabled": True}}}, "sender"),
    ("prefetch zero", {"roles": {"ingest": {"prefetch": 0}}}, "minimum"),
    ("prefetch over the quorum-queue cap", {"roles": {"sendAttachments": {"prefetch": 5000}}}, "maximum"),
    ("prefetch as a string", {"roles": {"backup": {"prefetch": "16"}}}, "not of type"),
    ("negative replicas", {"roles": {"scheduler": {"replicas": -1}}}, "minimum"),
    ("scheduler has no prefetch", {"roles": {"scheduler": {"prefetch": 4}}}, "prefetch"),
    ("unknown setting", {"config": {"graphUrl": "https://graph.microsoft.com/v1.0"}}, "graphUrl"),
    ("setting below its minimum", {"config": {"dbPoolSize": 0}}, "minimum"),
    ("setting of the wrong type", {"config": {"limiterEnabled": "yes"}}, "not of type"),
    ("graph url not http", {"config": {"graphBaseUrl": "graph.microsoft.com"}}, "does not match"),
    ("bad log format", {"config": {"logFormat": "xml"}}, "is not one of"),
    ("secret value instead of a reference", {"secrets": {"database": {"value": "postgres://x"}}}, "value"),
    ("unknown graph credential", {"secrets": {"graph": {"credential": "password"}}}, "is not one of"),
    (
        "graph secret on a role without Graph",
        {"roles": {"ingest": {"graphSecretName": "x"}}},
        "graphSecretName",
    ),
    ("PDB bound not a percentage", {"roles": {"ingest": {"pdb": {"minAvailable": "half"}}}}, "minAvailable"),
    ("no PDB bound", {"roles": {"ingest": {"pdb": {"maxUnavailable": None}}}}, "required"),
    ("grace margin too small", {"terminationGraceMarginSeconds": 0}, "minimum"),
    ("graceful drain negative", {"gracefulTimeoutSeconds": -5}, "minimum"),
    ("http port privileged", {"http": {"port": 80}}, "minimum"),
    ("bad image digest", {"image": {"digest": "latest"}}, "does not match"),
    ("keda max replicas zero", {"roles": {"backup": {"keda": {"maxReplicas": 0}}}}, "minimum"),
    (
        "bad alert duration",
        {"prometheusRule": {"backlogAgeGrowing": {"for": "ten minutes"}}},
        "does not match",
    ),
    ("bad memory quantity", {"roles": {"ingest": {"resources": {"limits": {"memory": "lots"}}}}}, "lots"),
    ("unknown resource", {"roles": {"ingest": {"resources": {"limits": {"gpu": 1}}}}}, "gpu"),
]


@pytest.mark.parametrize(
    ("override", "expected"), [(o, e) for _, o, e in BAD_VALUES], ids=[i for i, _, _ in BAD_VALUES]
)
def test_wrong_values_are_rejected(
    override: dict[str, Any], expected: str, schema: dict[str, Any], defaults: dict[str, Any]
) -> None:
    errors = schema_errors(schema, helm_merge(defaults, override))
    assert errors, f"{override} was accepted"
    assert any(expected in error for error in errors), errors


# --- the chart against the application ---------------------------------------------------------


def test_config_keys_are_settings(schema: dict[str, Any], defaults: dict[str, Any]) -> None:
    allowed = schema["properties"]["config"]["properties"]
    unknown = {key: camel_to_env(key) for key in allowed if camel_to_env(key) not in SETTING_ENV_NAMES}
    assert unknown == {}, "config keys that are not settings in pipeline/settings.py"
    described = {key: spec.get("description") for key, spec in allowed.items()}
    assert described == {key: camel_to_env(key) for key in allowed}
    secret = {key for key in allowed if camel_to_env(key) in SECRET_SETTINGS}
    assert secret == set(), "secret settings must come from Secrets, not the ConfigMap"
    assert set(defaults["config"]) <= set(allowed)


def template_sources() -> dict[str, str]:
    return {path.name: path.read_text() for path in sorted(TEMPLATES.iterdir()) if path.is_file()}


def test_env_names_the_chart_sets_are_settings() -> None:
    names = set()
    for text in template_sources().values():
        names |= set(re.findall(r"\bMAILPIPE_[A-Z][A-Z0-9_]*", text))
    assert names, "no MAILPIPE_ variable found in the templates"
    assert sorted(names - SETTING_ENV_NAMES) == []


def test_roles_and_queues_are_the_applications() -> None:
    helpers = (TEMPLATES / "_helpers.tpl").read_text()
    table_text = re.search(r'define "mailpipe.roleTable" -}}\n(.*?)\{\{- end', helpers, re.S)
    assert table_text is not None
    table = yaml.safe_load(table_text.group(1))
    assert {key: entry["role"] for key, entry in table.items()} == ROLE_KEYS
    assert sorted(ROLE_KEYS.values()) == sorted(ROLES)
    queue_names = {queue.name for queue in QUEUES}
    for key, entry in table.items():
        assert entry["graph"] == (entry["role"] in GRAPH_ROLES), key
        if entry["queue"]:
            assert entry["queue"] in queue_names, entry["queue"]
            assert entry["prefetchEnv"] in SETTING_ENV_NAMES, entry["prefetchEnv"]
    assert {e["queue"] for e in table.values() if e["queue"]} == {
        "mail.ingest",
        "mail.send.no-attachment",
        "mail.send.attachment",
        "mail.backup",
    }
    keys = re.search(r'define "mailpipe.roleKeys" -}}\n(.*?)\n', helpers)
    assert keys is not None
    assert keys.group(1).split() == list(ROLE_KEYS)


# --- static check: every value a template reads exists -----------------------------------------

ACTION = re.compile(r"\{\{-?((?:`[^`]*`|\"(?:\\.|[^\"\\])*\"|[^`\"])*?)-?\}\}", re.S)
STRING = re.compile(r"`[^`]*`|\"(?:\\.|[^\"\\])*\"")
CHAIN = re.compile(r"(?<![\w.$])(\$[A-Za-z_]\w*|\$)?((?:\.[A-Za-z_]\w*)+)")
ASSIGN = re.compile(r"^\s*(\$[A-Za-z_]\w*)\s*:?=\s*(.+?)\s*$", re.S)
ROLE = ("roles", "*")

Path_ = tuple[str, ...]


class ValueRefs:
    """The `.Values` paths the templates read, found by following Go-template scopes."""

    def __init__(self) -> None:
        self.refs: dict[Path_, set[str]] = {}
        self.guards: dict[str, set[str]] = {}

    def add(self, path: Path_, where: str) -> None:
        self.refs.setdefault(path, set()).add(where)

    def scan(self, name: str, text: str) -> None:
        variables: dict[str, Path_] = {}
        root: Path_ = ("<root>",)
        stack: list[tuple[Path_ | None, Path_ | None]] = []  # (dot inside the block, dot outside)
        dot: Path_ | None = root
        self.guards[name] = set(re.findall(r'hasKey \$role "(\w+)"', text))
        for match in ACTION.finditer(text):
            action = match.group(1).strip()
            if action.startswith("/*"):
                continue
            bare = STRING.sub('""', action)
            word = bare.split(None, 1)[0] if bare.split() else ""
            rest = bare[len(word) :].strip()
            if word == "end":
                dot = stack.pop()[1] if stack else root
                continue
            if word == "else":
                if stack:
                    dot = stack[-1][1]
                continue
            if word in {"if", "with", "range", "define", "block"}:
                self._collect(name, rest, dot, variables)
                inner: Path_ | None = dot
                if word == "with":
                    inner = self._resolve(rest, dot, variables)
                elif word == "range":
                    inner = None
                elif word in {"define", "block"}:
                    inner = root
                stack.append((inner, dot))
                dot = inner
                continue
            assign = ASSIGN.match(bare)
            if assign:
                var, expr = assign.groups()
                target = self._resolve(expr, dot, variables)
                if re.fullmatch(r"index \$?\.Values\.roles \$\w+", expr.strip()):
                    target = ROLE
                if target is not None:
                    variables[var] = target
                else:
                    variables.pop(var, None)
                self._collect(name, expr, dot, variables)
                continue
            self._collect(name, bare, dot, variables)

    @staticmethod
    def _chain_path(var: str | None, chain: str, dot: Path_ | None, variables: dict[str, Path_]) -> Path_ | None:
        parts = tuple(chain.strip(".").split("."))
        if var is None and dot == ("<root>",) and parts[:2] == ("root", "Values"):
            return parts[2:]  # helpers called with (dict "root" $ ...)
        if var == "$" or (var is None and dot == ("<root>",)):
            return parts[1:] if parts[0] == "Values" else None
        if var is None:
            return None if dot is None else dot + parts
        base = variables.get(var)
        return None if base is None else base + parts

    def _resolve(self, expr: str, dot: Path_ | None, variables: dict[str, Path_]) -> Path_ | None:
        """The values path an expression denotes, when it is nothing but a chain."""
        expr = expr.strip()
        match = CHAIN.fullmatch(expr)
        if not match:
            return None
        path = self._chain_path(match.group(1), match.group(2), dot, variables)
        return path if path else None

    def _collect(self, name: str, text: str, dot: Path_ | None, variables: dict[str, Path_]) -> None:
        for match in CHAIN.finditer(text):
            path = self._chain_path(match.group(1), match.group(2), dot, variables)
            if path:
                self.add(path, name)


def walk(values: Any, path: Path_) -> bool:
    node = values
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def leaves(node: Any, prefix: Path_ = ()) -> Iterator[Path_]:
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from leaves(value, (*prefix, key))
    else:
        yield prefix


def holders(defaults: dict[str, Any], key: str) -> set[str]:
    return {name for name, role in defaults["roles"].items() if key in role}


@pytest.fixture(scope="module")
def value_refs() -> ValueRefs:
    refs = ValueRefs()
    for name, text in template_sources().items():
        refs.scan(name, text)
    return refs


def test_the_static_check_sees_the_templates(value_refs: ValueRefs) -> None:
    """Guard against a scanner that silently finds nothing."""
    assert ("image", "repository") in value_refs.refs
    assert ("roles", "*", "prefetch") in value_refs.refs
    assert ("prometheusRule", "backlogAgeGrowing", "thresholdSeconds") in value_refs.refs
    assert ("podSecurity", "runAsUser") in value_refs.refs
    assert len(value_refs.refs) > 60


def test_templates_read_only_values_that_exist(value_refs: ValueRefs, defaults: dict[str, Any]) -> None:
    problems = []
    for path, where in sorted(value_refs.refs.items()):
        if path[:2] == ROLE:
            rest = path[2:]
            has = {key for key, role in defaults["roles"].items() if walk(role, rest)}
            if not has:
                problems.append(f"$role.{'.'.join(rest)} ({', '.join(sorted(where))}): in no role")
            elif has != set(defaults["roles"]):
                # safe only under `hasKey $role "g"` for a key g that no other role has
                unguarded = [w for w in where if not any(holders(defaults, g) <= has for g in value_refs.guards[w])]
                if unguarded:
                    problems.append(
                        f"$role.{'.'.join(rest)} ({', '.join(sorted(unguarded))}): only in {sorted(has)} "
                        "and not guarded by hasKey $role"
                    )
        elif not walk(defaults, path):
            problems.append(f".Values.{'.'.join(path)} ({', '.join(sorted(where))}): not in values.yaml")
    assert problems == []


def test_every_value_is_read_by_a_template(value_refs: ValueRefs, defaults: dict[str, Any]) -> None:
    read = set(value_refs.refs)

    def is_read(path: Path_) -> bool:
        if path[:1] == ("roles",):
            # `index .Values.roles $key` reads the map, not each role's keys
            candidates, shortest = [path, (*ROLE, *path[2:])], 3
        else:
            candidates, shortest = [path], 1
        return any(c[:n] in read for c in candidates for n in range(shortest, len(c) + 1))

    unread = [".".join(path) for path in leaves(defaults) if not is_read(path)]
    assert unread == []


# --- rendering (needs a Helm engine) -----------------------------------------------------------


class ChartRejectedError(Exception):
    """Helm refused the values or the templates."""


Renderer = Callable[[dict[str, Any]], list[dict[str, Any]]]


def _docs(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def _binary_renderer(helm: str) -> Renderer:
    def render(values: dict[str, Any]) -> list[dict[str, Any]]:
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as handle:
            yaml.safe_dump(values, handle)
            handle.flush()
            result = subprocess.run(
                [helm, "template", "mp", str(CHART), "--namespace", "mail", "-f", handle.name],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
        if result.returncode != 0:
            raise ChartRejectedError(result.stderr)
        return _docs(result.stdout)

    return render


def _sdk_renderer() -> Renderer | None:
    try:
        import helm_python  # noqa: PLC0415 - optional: the SDK embeds Helm's Go library
    except ImportError:
        return None

    def render(values: dict[str, Any]) -> list[dict[str, Any]]:
        with helm_python.Chart.load(str(CHART)) as chart:
            try:
                manifests = chart.render(values, name="mp", namespace="mail", is_install=True)
            except helm_python.HelmError as exc:
                raise ChartRejectedError(str(exc)) from exc
        return [doc for path, text in sorted(manifests.items()) if path.endswith(".yaml") for doc in _docs(text)]

    return render


Linter = Callable[[dict[str, Any]], list[str]]


def _binary_linter(helm: str) -> Linter:
    def lint(values: dict[str, Any]) -> list[str]:
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as handle:
            yaml.safe_dump(values, handle)
            handle.flush()
            result = subprocess.run(
                [helm, "lint", "--strict", str(CHART), "-f", handle.name],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
        return [] if result.returncode == 0 else [result.stdout + result.stderr]

    return lint


def _sdk_linter() -> Linter | None:
    try:
        import helm_python  # noqa: PLC0415
    except ImportError:
        return None

    def lint(values: dict[str, Any]) -> list[str]:
        report = helm_python.lint(str(CHART), values, strict=True)
        warnings = [f"{m['path']}: {m['error']}" for m in report["messages"] if m["severity"] >= 2]
        return [*report["errors"], *warnings]

    return lint


NO_ENGINE = (
    "no Helm engine: neither a `helm` binary on PATH nor the helm-python-sdk package "
    "(pip install helm-python-sdk) is installed; schema and static checks still ran"
)


@pytest.fixture(scope="module")
def lint() -> Linter:
    helm = shutil.which("helm")
    if helm:
        return _binary_linter(helm)
    sdk = _sdk_linter()
    if sdk is None:
        pytest.skip(NO_ENGINE)
    return sdk


@pytest.mark.parametrize("path", [None, *CI_FILES], ids=lambda p: p.name if p else "values.yaml")
def test_helm_lint_strict(path: Path | None, lint: Linter) -> None:
    """What chart-testing (`ct lint`) runs: `helm lint --strict` with each ci/*.yaml."""
    values = (load_yaml(path) or {}) if path else {}
    assert lint(values) == []


@pytest.fixture(scope="module")
def render() -> Renderer:
    helm = shutil.which("helm")
    if helm:
        return _binary_renderer(helm)
    sdk = _sdk_renderer()
    if sdk is None:
        pytest.skip(NO_ENGINE)
    return sdk


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def env_of(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in c.get("env", [])}


def role_of(deployment: dict[str, Any]) -> str:
    args = container(deployment)["args"]
    assert args[:2] == ["run", "--role"], args
    role: str = args[2]
    return role


def check_no_secret_values(docs: list[dict[str, Any]]) -> None:
    assert of_kind(docs, "Secret") == [], "the chart must not create Secrets"
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            assert not set(doc["data"]) & SECRET_SETTINGS
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        for c in spec.get("containers", []):
            for name, item in env_of(c).items():
                if name in SECRET_SETTINGS:
                    assert "value" not in item, f"{doc['metadata']['name']}: {name} has a literal value"
                    assert "secretKeyRef" in item["valueFrom"], name


def check_deployments(docs: list[dict[str, Any]], values: dict[str, Any]) -> None:
    deployments = of_kind(docs, "Deployment")
    enabled = {ROLE_KEYS[key] for key, role in values["roles"].items() if role["enabled"]}
    assert sorted(role_of(d) for d in deployments) == sorted(enabled), "one Deployment per enabled role"
    config = of_kind(docs, "ConfigMap")[0]["data"]
    assert config["MAILPIPE_HTTP_HOST"] == "0.0.0.0"
    for deployment in deployments:
        role = role_of(deployment)
        key = next(k for k, r in ROLE_KEYS.items() if r == role)
        role_values = values["roles"][key]
        pod = deployment["spec"]["template"]["spec"]
        c = container(deployment)
        env = env_of(c)
        assert set(env) <= SETTING_ENV_NAMES | {e["name"] for e in values["extraEnv"] + role_values["extraEnv"]}
        # replicas: owned by KEDA when it scales the role
        if role_values.get("keda", {}).get("enabled"):
            assert "replicas" not in deployment["spec"], role
        else:
            assert deployment["spec"]["replicas"] == role_values["replicas"], role
        # drain: the kubelet waits longer than the application drains
        drain = float(env["MAILPIPE_GRACEFUL_TIMEOUT_S"]["value"])
        assert pod["terminationGracePeriodSeconds"] >= drain + 5, role
        # concurrency
        if "prefetch" in role_values:
            prefetch_env = f"MAILPIPE_{role.upper().replace('-', '_')}_PREFETCH"
            assert env[prefetch_env]["value"] == str(role_values["prefetch"]), role
        if role == "scheduler":
            assert env["MAILPIPE_MAX_IN_FLIGHT_NO_ATTACHMENTS"]["value"] == str(role_values["maxInFlightNoAttachments"])
            assert env["MAILPIPE_MAX_IN_FLIGHT_ATTACHMENTS"]["value"] == str(role_values["maxInFlightAttachments"])
        # Graph credentials only where Graph is called
        has_graph = "MAILPIPE_GRAPH_CLIENT_ID" in env
        assert has_graph == (role in GRAPH_ROLES), role
        volumes = {v["name"]: v for v in pod["volumes"]}
        if has_graph:
            assert ("MAILPIPE_GRAPH_CLIENT_SECRET_FILE" in env) != ("MAILPIPE_GRAPH_CERTIFICATE_PATH" in env)
            secret = role_values.get("graphSecretName") or values["secrets"]["graph"]["name"]
            assert env["MAILPIPE_GRAPH_CLIENT_ID"]["valueFrom"]["secretKeyRef"]["name"] == secret
            assert volumes["graph-credential"]["secret"]["secretName"] == secret
        else:
            assert "graph-credential" not in volumes
        assert ("MAILPIPE_ENCRYPTION_KEYS_FILE" in env) == values["secrets"]["encryptionKeys"]["enabled"]
        # probes
        assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert c["startupProbe"]["httpGet"]["path"] == "/livez"
        assert c["ports"] == [{"name": "http", "containerPort": values["http"]["port"], "protocol": "TCP"}]
        # hardening
        security = c["securityContext"]
        assert security["runAsNonRoot"] is True
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        assert volumes["tmp"]["emptyDir"] == {"sizeLimit": role_values.get("tmpSizeLimit", values["tmpSizeLimit"])}
        assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
        # the ConfigMap is read whole, and a change to it rolls the pods
        assert c["envFrom"] == [{"configMapRef": {"name": of_kind(docs, "ConfigMap")[0]["metadata"]["name"]}}]
        assert "checksum/config" in deployment["spec"]["template"]["metadata"]["annotations"]


def check_companions(docs: list[dict[str, Any]], values: dict[str, Any]) -> None:
    enabled = {ROLE_KEYS[key] for key, role in values["roles"].items() if role["enabled"]}
    component = "app.kubernetes.io/component"
    services = {s["metadata"]["labels"][component] for s in of_kind(docs, "Service")}
    assert services == enabled
    with_pdb = {ROLE_KEYS[k] for k, r in values["roles"].items() if r["enabled"] and r["pdb"]["enabled"]}
    pdbs = {p["metadata"]["labels"][component]: p["spec"] for p in of_kind(docs, "PodDisruptionBudget")}
    assert set(pdbs) == with_pdb
    for spec in pdbs.values():
        assert len({"minAvailable", "maxUnavailable"} & set(spec)) == 1
    jobs = of_kind(docs, "Job")
    if values["migrations"]["enabled"]:
        (job,) = jobs
        annotations = job["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
        c = job["spec"]["template"]["spec"]["containers"][0]
        assert c["args"] == ["db", "upgrade"]
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert "envFrom" not in c, "a pre-install hook runs before the chart's ConfigMap exists"
    else:
        assert jobs == []


def merged(override: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    return helm_merge(defaults, override)


def test_render_defaults(render: Renderer, defaults: dict[str, Any]) -> None:
    docs = render({})
    assert len(of_kind(docs, "Deployment")) == len(ROLES)
    check_deployments(docs, defaults)
    check_companions(docs, defaults)
    check_no_secret_values(docs)
    for kind in ("ServiceMonitor", "PrometheusRule", "ScaledObject", "TriggerAuthentication"):
        assert of_kind(docs, kind) == [], f"{kind} is optional and off by default"


@pytest.mark.parametrize("path", CI_FILES, ids=lambda p: p.name)
def test_render_ci_values(path: Path, render: Renderer, defaults: dict[str, Any]) -> None:
    override = load_yaml(path) or {}
    values = merged(override, defaults)
    docs = render(override)
    check_deployments(docs, values)
    check_companions(docs, values)
    check_no_secret_values(docs)


def test_render_keda_scales_worker_queues(render: Renderer, defaults: dict[str, Any]) -> None:
    override = {"roles": {key: {"keda": {"enabled": True}} for key in ROLE_KEYS if key != "scheduler"}}
    docs = render(override)
    scaled = {s["spec"]["scaleTargetRef"]["name"]: s["spec"] for s in of_kind(docs, "ScaledObject")}
    queues = {name: spec["triggers"][0]["metadata"]["queueName"] for name, spec in scaled.items()}
    assert queues == {
        "mp-mailpipe-ingest": "mail.ingest",
        "mp-mailpipe-send-no-attachments": "mail.send.no-attachment",
        "mp-mailpipe-send-attachments": "mail.send.attachment",
        "mp-mailpipe-backup": "mail.backup",
    }
    (auth,) = of_kind(docs, "TriggerAuthentication")
    assert auth["spec"]["secretTargetRef"] == [{"parameter": "host", "name": "mailpipe-amqp", "key": "url"}]
    for spec in scaled.values():
        assert spec["triggers"][0]["authenticationRef"] == {"name": auth["metadata"]["name"]}
    check_deployments(docs, merged(override, defaults))


def test_render_alerts_use_the_application_metrics(render: Renderer) -> None:
    docs = render({"prometheusRule": {"enabled": True}, "serviceMonitor": {"enabled": True}})
    (rule,) = of_kind(docs, "PrometheusRule")
    alerts = {r["alert"]: r["expr"] for group in rule["spec"]["groups"] for r in group["rules"]}
    assert set(alerts) == {
        "MailpipeDeadLetterQueueGrowing",
        "MailpipeBacklogAgeGrowing",
        "MailpipeGraphThrottling",
        "MailpipeBackupFailures",
    }
    assert "mailpipe_dlq_size" in alerts["MailpipeDeadLetterQueueGrowing"]
    assert "mailpipe_backlog_oldest_age_seconds" in alerts["MailpipeBacklogAgeGrowing"]
    assert 'mailpipe_graph_responses_total{namespace="mail"' in alerts["MailpipeGraphThrottling"]
    assert 'status="429"' in alerts["MailpipeGraphThrottling"]
    assert "mailpipe_backups_total" in alerts["MailpipeBackupFailures"]
    (monitor,) = of_kind(docs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert monitor["spec"]["endpoints"][0]["port"] == "http"


def test_render_config_map_keeps_numbers_exact(render: Renderer) -> None:
    docs = render({"config": {"maxAttachmentBytes": 157286400, "mailboxRatePerS": 12.5, "limiterEnabled": False}})
    data = of_kind(docs, "ConfigMap")[0]["data"]
    assert data["MAILPIPE_MAX_ATTACHMENT_BYTES"] == "157286400"
    assert data["MAILPIPE_MAILBOX_RATE_PER_S"] == "12.5"
    assert data["MAILPIPE_LIMITER_ENABLED"] == "false"
    assert set(data) <= SETTING_ENV_NAMES
    for key in ("maxAttachmentBytes", "mailboxRatePerS", "limiterEnabled"):
        assert camel_to_env(key) in data, "the Python mirror of `snakecase | upper` disagrees with Helm"


def test_render_settings_accept_the_config_map(render: Renderer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ConfigMap plus one role's literal env load as Settings without a validation error."""
    docs = render({"config": {"maxAttachmentBytes": 157286400, "mailboxRatePerS": 12.5}})
    data = of_kind(docs, "ConfigMap")[0]["data"]
    deployment = next(d for d in of_kind(docs, "Deployment") if role_of(d) == "scheduler")
    for name in list(Settings.model_fields):
        monkeypatch.delenv(f"MAILPIPE_{name.upper()}", raising=False)
    for name, value in data.items():
        monkeypatch.setenv(name, value)
    for name, item in env_of(container(deployment)).items():
        if "value" in item:
            monkeypatch.setenv(name, item["value"])
    settings = Settings()
    assert settings.http_host == "0.0.0.0"
    assert settings.max_attachment_bytes == 157286400
    assert settings.auto_migrate is False


def test_render_rejects_wrong_values(render: Renderer) -> None:
    with pytest.raises(ChartRejectedError, match="prefetch"):
        render({"roles": {"ingest": {"prefetch": 0}}})
    with pytest.raises(ChartRejectedError, match="replica"):
        render({"roles": {"ingest": {"replica": 3}}})
