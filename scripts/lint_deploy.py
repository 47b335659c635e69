"""Checks of scripts/lint-deploy.sh that its tools don't do themselves. Runs in .venv-deploy.

  lint_deploy.py schema-warnings OUTPUT_FILE
      kubernetes-validate only WARNs (exit 0) on a kind it has no schema for, which would let a
      typo in `kind:` or `apiVersion:` pass. Fails on every such warning except for the custom
      resources listed in CRDS, which `crds` below validates instead.
  lint_deploy.py crds FILE...
      Validates the custom resources of CRDS in FILEs against the schemas written here and, for
      KServe's, in kserve_schema.py (strict: unknown fields are errors, as with
      `kubernetes-validate --strict`); our ClusterServingRuntime also against its flags.
  lint_deploy.py same-objects DIR RENDERED
      Every object of DIR/*.yaml (other than kustomization.yaml) is in RENDERED (the output of
      `kustomize build DIR`), and nothing else: a manifest left out of the kustomization fails.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import jsonschema
import yaml

from kserve_schema import KSERVE_RELEASE, SCHEMAS as KSERVE_SCHEMAS, runtime_checks

# Prometheus durations ("15s", "1m30s", "500ms").
DURATION = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": STRING_MAP,
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}
METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253},
        "namespace": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
        "labels": STRING_MAP,
        "annotations": STRING_MAP,
    },
}
ANY = {}

# monitoring.coreos.com/v1 ServiceMonitor: the fields of the Prometheus Operator API. Those this
# project uses are typed; the others are accepted with any value, so that a field added here later
# fails only on its type, never as unknown.
SERVICE_MONITOR_ENDPOINT = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "port": {"type": "string", "minLength": 1},
        "targetPort": {"type": ["string", "integer"]},
        "path": {"type": "string", "pattern": "^/"},
        "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
        "interval": DURATION,
        "scrapeTimeout": DURATION,
        "honorLabels": {"type": "boolean"},
        "honorTimestamps": {"type": "boolean"},
        "params": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}},
        **{
            key: ANY
            for key in (
                "authorization", "basicAuth", "bearerTokenFile", "bearerTokenSecret", "enableHttp2",
                "filterRunning", "followRedirects", "metricRelabelings", "noProxy", "oauth2",
                "proxyConnectHeader", "proxyFromEnvironment", "proxyUrl", "relabelings", "tlsConfig",
                "trackTimestampsStaleness",
            )
        },
    },
}
SERVICE_MONITOR = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": METADATA,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": LABEL_SELECTOR,
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "endpoints": {"type": "array", "minItems": 1, "items": SERVICE_MONITOR_ENDPOINT},
                "jobLabel": {"type": "string"},
                "targetLabels": {"type": "array", "items": {"type": "string"}},
                "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                **{
                    key: ANY
                    for key in (
                        "attachMetadata", "bodySizeLimit", "convertClassicHistogramsToNHCB",
                        "fallbackScrapeProtocol", "keepDroppedTargets", "labelLimit",
                        "labelNameLengthLimit", "labelValueLengthLimit", "nativeHistogramBucketLimit",
                        "nativeHistogramMinBucketFactor", "sampleLimit", "scrapeClass",
                        "scrapeClassicHistograms", "scrapeProtocols", "selectorMechanism",
                        "serviceDiscoveryRole", "targetLimit",
                    )
                },
            },
        },
    },
}

# (apiVersion, kind) -> schema: the custom resources this project ships. Their CRDs are not part
# of Kubernetes, so kubernetes-validate has no schema for them.
# KServe's are written down in kserve_schema.py (from the CRDs of a pinned release).
# monitoring.coreos.com/v1 PrometheusRule (k8s/monitoring/prometheus-rules.yaml and drift-rules.yaml):
# groups of recording and alerting rules, the Prometheus Operator API's fields (the expressions
# themselves are checked by promtool: scripts/lint-deploy.sh step 5, tests/python/test_monitoring.py).
PROMETHEUS_RULE_RULE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["expr"],
    "oneOf": [{"required": ["record"]}, {"required": ["alert"]}],
    "properties": {
        "record": {"type": "string", "pattern": "^[a-zA-Z_:][a-zA-Z0-9_:]*$"},
        "alert": {"type": "string", "minLength": 1},
        "expr": {"type": ["string", "integer"]},
        "for": DURATION,
        "keep_firing_for": DURATION,
        "labels": STRING_MAP,
        "annotations": STRING_MAP,
    },
}
PROMETHEUS_RULE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": METADATA,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["groups"],
            "properties": {
                "groups": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name", "rules"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "interval": DURATION,
                            "query_offset": DURATION,
                            "limit": {"type": "integer", "minimum": 0},
                            "partial_response_strategy": {"type": "string"},
                            "labels": STRING_MAP,
                            "rules": {"type": "array", "minItems": 1, "items": PROMETHEUS_RULE_RULE},
                        },
                    },
                },
            },
        },
    },
}

CRDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR,
    ("monitoring.coreos.com/v1", "PrometheusRule"): PROMETHEUS_RULE,
    **KSERVE_SCHEMAS,
}


_WARN = re.compile(r"^WARN (?P<file>\S+) Couldn't find schema for kind (?P<kind>\S+) with api version (?P<api>\S+) ")


def load(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def schema_warnings(output_file: str) -> int:
    bad = []
    for line in Path(output_file).read_text(encoding="utf-8").splitlines():
        if not line.startswith("WARN"):
            continue
        m = _WARN.match(line)
        if m and (m["api"], m["kind"]) in CRDS:
            continue
        bad.append(line)
    for line in bad:
        print(f"lint-deploy: no schema, so not validated (a typo in kind/apiVersion?): {line}", file=sys.stderr)
    return 1 if bad else 0


def crds(files: list[str]) -> int:
    rc = 0
    for path in files:
        for doc in load(path):
            schema = CRDS.get((doc.get("apiVersion"), doc.get("kind")))
            if schema is None:
                continue
            where = f"{path}: {doc['kind']}/{doc.get('metadata', {}).get('name')}"
            errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
            messages = [f"{'.'.join(map(str, e.path)) or '(root)'}: {e.message}" for e in errors]
            if not errors and doc["kind"] == "ClusterServingRuntime":
                messages += runtime_checks(doc)
            for message in messages:
                print(f"ERROR {where}: {message}")
                rc = 1
            if not messages:
                source = f"KServe {KSERVE_RELEASE}'s in scripts/kserve_schema.py" if doc["apiVersion"].startswith("serving.kserve.io/") else "the one in scripts/lint_deploy.py"
                print(f"INFO {where} passed against the schema ({source})")
    return rc


def same_objects(directory: str, rendered: str) -> int:
    def key(doc: dict) -> tuple[str, str, str, str]:
        meta = doc.get("metadata", {})
        return doc.get("apiVersion", ""), doc.get("kind", ""), meta.get("namespace", ""), meta.get("name", "")

    files = sorted(p for p in Path(directory).glob("*.yaml") if p.name != "kustomization.yaml")
    in_files = {key(doc) for p in files for doc in load(p)}
    in_build = {key(doc) for doc in load(rendered)}
    missing, extra = in_files - in_build, in_build - in_files
    for k in sorted(missing):
        print(f"ERROR {directory}: {k} is in a manifest but not in the kustomization's output (add the file to resources)")
    for k in sorted(extra):
        print(f"ERROR {directory}: {k} is rendered but in no manifest file of the directory")
    if not (missing or extra):
        print(f"INFO {directory}: the kustomization renders all {len(in_files)} objects of its manifests")
    return 1 if missing or extra else 0


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[1] == "schema-warnings":
        return schema_warnings(argv[2])
    if len(argv) >= 3 and argv[1] == "crds":
        return crds(argv[2:])
    if len(argv) == 4 and argv[1] == "same-objects":
        return same_objects(argv[2], argv[3])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
