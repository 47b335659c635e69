"""Strict schemas of KServe's ServingRuntime / ClusterServingRuntime (serving.kserve.io/v1alpha1) and
InferenceService (serving.kserve.io/v1beta1), written down from the CRDs of KServe v0.15.2
(config/crd/full/serving.kserve.io_{clusterservingruntimes,inferenceservices}.yaml) and its
constants (pkg/constants/constants.go: protocol versions, deployment modes). Used by
scripts/lint_deploy.py for k8s/kserve/.

As with the ServiceMonitor there: every field of the CRD is listed, so an unknown one (a typo, a
field of another release) is an error; the fields this project uses are typed as the CRD types
them, the others accept any value, so a field added here later fails only on its type.
"""

from __future__ import annotations

KSERVE_RELEASE = "v0.15.2"

ANY: dict = {}
STRING = {"type": "string"}
STRINGS = {"type": "array", "items": STRING}
STRING_MAP = {"type": "object", "additionalProperties": STRING}
INT32 = {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1}
PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
INT_OR_STRING = {"anyOf": [{"type": "integer"}, {"type": "string"}]}
QUANTITY = {
    "anyOf": [
        {"type": "integer"},
        {
            "type": "string",
            "pattern": r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$",
        },
    ]
}
DNS_LABEL = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63}


def strict(properties: dict, required: list[str] | None = None, anything: tuple[str, ...] = ()) -> dict:
    """An object with exactly these fields: `properties` typed, `anything` of any value."""
    schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {**properties, **{key: ANY for key in anything}},
    }
    if required:
        schema["required"] = required
    return schema


# KServe's own keys: the protocols of pkg/constants (InferenceServiceProtocol) and the
# deployment modes (DeploymentModeType); other keys are free-form as in Kubernetes.
PROTOCOL = {"enum": ["v1", "v2", "grpc-v1", "grpc-v2"]}
ISVC_ANNOTATIONS = {
    "type": "object",
    "properties": {"serving.kserve.io/deploymentMode": {"enum": ["Serverless", "RawDeployment", "ModelMesh"]}},
    "additionalProperties": STRING,
}

# --- core/v1 pieces, as the CRDs embed them ---------------------------------------------------
HTTP_GET = strict(
    {"path": {"type": "string", "pattern": "^/"}, "port": INT_OR_STRING, "host": STRING, "scheme": {"enum": ["HTTP", "HTTPS"]}},
    required=["port"],
    anything=("httpHeaders",),
)
PROBE = strict(
    {
        "httpGet": HTTP_GET,
        "grpc": strict({"port": PORT, "service": STRING}, required=["port"]),
        **{
            key: {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}
            for key in ("failureThreshold", "initialDelaySeconds", "periodSeconds", "successThreshold", "timeoutSeconds")
        },
    },
    anything=("exec", "tcpSocket", "terminationGracePeriodSeconds"),
)
SECURITY_CONTEXT = strict(
    {
        "allowPrivilegeEscalation": {"type": "boolean"},
        "privileged": {"type": "boolean"},
        "readOnlyRootFilesystem": {"type": "boolean"},
        "runAsNonRoot": {"type": "boolean"},
        "runAsUser": {"type": "integer", "minimum": 0},
        "runAsGroup": {"type": "integer", "minimum": 0},
        "capabilities": strict({"add": STRINGS, "drop": STRINGS}),
        "seccompProfile": strict(
            {"type": {"enum": ["RuntimeDefault", "Localhost", "Unconfined"]}, "localhostProfile": STRING},
            required=["type"],
        ),
    },
    anything=("appArmorProfile", "procMount", "seLinuxOptions", "windowsOptions"),
)
RESOURCES = strict(
    {"limits": {"type": "object", "additionalProperties": QUANTITY}, "requests": {"type": "object", "additionalProperties": QUANTITY}},
    anything=("claims",),
)
ENV = {"type": "array", "items": strict({"name": {"type": "string", "minLength": 1}, "value": STRING}, required=["name"], anything=("valueFrom",))}
# IANA_SVC_NAME, as Kubernetes checks it (Knative wants http1 or h2c: see runtime_checks).
PORT_NAME = {"type": "string", "pattern": r"^(?=.*[a-z])[a-z0-9]([a-z0-9]|-(?!-))*[a-z0-9]$|^[a-z]$", "maxLength": 15}
CONTAINER_PORTS = {
    "type": "array",
    "items": strict(
        {"containerPort": PORT, "name": PORT_NAME, "protocol": {"enum": ["TCP", "UDP", "SCTP"]}},
        required=["containerPort"],
        anything=("hostIP", "hostPort"),
    ),
}
VOLUME_MOUNTS = {
    "type": "array",
    "items": strict(
        {"name": STRING, "mountPath": {"type": "string", "pattern": "^/"}, "readOnly": {"type": "boolean"}, "subPath": STRING},
        required=["mountPath", "name"],
        anything=("mountPropagation", "recursiveReadOnly", "subPathExpr"),
    ),
}
# The Container fields shared by the runtime's containers and the InferenceService's model.
CONTAINER_FIELDS = {
    "image": {"type": "string", "minLength": 1},
    "command": STRINGS,
    "args": STRINGS,
    "env": ENV,
    "ports": CONTAINER_PORTS,
    "livenessProbe": PROBE,
    "readinessProbe": PROBE,
    "startupProbe": PROBE,
    "resources": RESOURCES,
    "securityContext": SECURITY_CONTEXT,
    "volumeMounts": VOLUME_MOUNTS,
    "imagePullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
}
CONTAINER_ANY = (
    "envFrom", "lifecycle", "resizePolicy", "restartPolicy", "stdin", "stdinOnce", "terminationMessagePath",
    "terminationMessagePolicy", "tty", "volumeDevices", "workingDir",
)
CONTAINER = strict({"name": DNS_LABEL, **CONTAINER_FIELDS}, required=["name"], anything=CONTAINER_ANY)
VOLUME = strict(
    {"name": DNS_LABEL, "emptyDir": strict({"medium": STRING, "sizeLimit": QUANTITY})},
    required=["name"],
    anything=(
        "awsElasticBlockStore", "azureDisk", "azureFile", "cephfs", "cinder", "configMap", "csi", "downwardAPI",
        "ephemeral", "fc", "flexVolume", "flocker", "gcePersistentDisk", "gitRepo", "glusterfs", "hostPath", "image",
        "iscsi", "nfs", "persistentVolumeClaim", "photonPersistentDisk", "portworxVolume", "projected", "quobyte",
        "rbd", "scaleIO", "secret", "storageos", "vsphereVolume",
    ),
)


def metadata(namespaced: bool, annotations: dict = STRING_MAP) -> dict:
    props = {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253},
        "labels": STRING_MAP,
        "annotations": annotations,
    }
    if namespaced:
        props["namespace"] = DNS_LABEL
    return strict(props, required=["name"])


# --- ServingRuntimeSpec (serving.kserve.io/v1alpha1) -------------------------------------------
SERVING_RUNTIME_SPEC = strict(
    {
        "annotations": STRING_MAP,
        "labels": STRING_MAP,
        "containers": {"type": "array", "minItems": 1, "items": CONTAINER},
        "supportedModelFormats": {
            "type": "array",
            "items": strict(
                {
                    "name": {"type": "string", "minLength": 1},
                    "version": STRING,
                    "autoSelect": {"type": "boolean"},
                    "priority": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
                },
                required=["name"],
            ),
        },
        "protocolVersions": {"type": "array", "items": PROTOCOL, "uniqueItems": True},
        "volumes": {"type": "array", "items": VOLUME},
        "disabled": {"type": "boolean"},
        "multiModel": {"type": "boolean"},
        "replicas": {"type": "integer", "minimum": 0},
    },
    required=["containers"],
    anything=(
        "affinity", "builtInAdapter", "grpcDataEndpoint", "grpcEndpoint", "hostIPC", "httpDataEndpoint",
        "imagePullSecrets", "nodeSelector", "storageHelper", "tolerations", "workerSpec",
    ),
)


def serving_runtime(kind: str) -> dict:
    return strict(
        {
            "apiVersion": {"const": "serving.kserve.io/v1alpha1"},
            "kind": {"const": kind},
            "metadata": metadata(namespaced=kind == "ServingRuntime"),
            "spec": SERVING_RUNTIME_SPEC,
        },
        required=["apiVersion", "kind", "metadata", "spec"],
    )


# --- InferenceService (serving.kserve.io/v1beta1) ----------------------------------------------
MODEL = strict(
    {
        "modelFormat": strict({"name": {"type": "string", "minLength": 1}, "version": STRING}, required=["name"]),
        "runtime": {"type": "string", "minLength": 1},
        "runtimeVersion": STRING,
        "protocolVersion": PROTOCOL,
        "storageUri": {"type": "string", "pattern": r"^[a-z0-9+.-]+://\S+$"},
        "name": STRING,
        **CONTAINER_FIELDS,
    },
    required=["modelFormat"],
    anything=CONTAINER_ANY + ("storage",),
)
PREDICTOR_ANY = (
    "activeDeadlineSeconds", "affinity", "annotations", "autoScaling", "automountServiceAccountToken", "batcher",
    "canaryTrafficPercent", "containerConcurrency", "containers", "deploymentStrategy", "dnsConfig", "dnsPolicy",
    "enableServiceLinks", "hostAliases", "hostIPC", "hostNetwork", "hostPID", "hostUsers", "hostname", "huggingface",
    "imagePullSecrets", "initContainers", "labels", "lightgbm", "logger", "nodeName", "nodeSelector", "onnx", "os",
    "overhead", "paddle", "pmml", "preemptionPolicy", "priority", "priorityClassName", "pytorch", "readinessGates",
    "resourceClaims", "resources", "restartPolicy", "runtimeClassName", "scaleMetricType", "schedulerName",
    "schedulingGates", "securityContext", "serviceAccount", "serviceAccountName", "setHostnameAsFQDN",
    "shareProcessNamespace", "sklearn", "subdomain", "tensorflow", "terminationGracePeriodSeconds", "tolerations",
    "topologySpreadConstraints", "triton", "volumes", "workerSpec", "xgboost",
)
PREDICTOR = strict(
    {
        "model": MODEL,
        "minReplicas": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
        "maxReplicas": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
        "scaleMetric": {"enum": ["cpu", "memory", "concurrency", "rps"]},
        "scaleTarget": INT32,
        "timeout": {"type": "integer", "minimum": 0},
    },
    anything=PREDICTOR_ANY,
)
INFERENCE_SERVICE = strict(
    {
        "apiVersion": {"const": "serving.kserve.io/v1beta1"},
        "kind": {"const": "InferenceService"},
        "metadata": metadata(namespaced=True, annotations=ISVC_ANNOTATIONS),
        "spec": strict({"predictor": PREDICTOR}, required=["predictor"], anything=("explainer", "transformer")),
    },
    required=["apiVersion", "kind", "metadata", "spec"],
)

SCHEMAS = {
    ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"): serving_runtime("ClusterServingRuntime"),
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): serving_runtime("ServingRuntime"),
    ("serving.kserve.io/v1beta1", "InferenceService"): INFERENCE_SERVICE,
}


def _flag(args: list[str], flag: str) -> str | None:
    for arg in args:
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def runtime_checks(doc: dict) -> list[str]:
    """What a schema cannot say about our runtime: the server's flags, ports, probes and the
    scrape annotations agree, KServe's model mount and name are passed, the ports carry the
    names Knative routes by (http1, h2c)."""
    errors = []
    spec = doc["spec"]
    (container,) = spec["containers"]
    args = container.get("args", [])
    ports = container.get("ports", [])
    if _flag(args, "--model-repository") != "/mnt/models":
        errors.append("args: --model-repository=/mnt/models (where KServe's storage initializer puts the model)")
    if _flag(args, "--model-name") != "{{.Name}}":
        errors.append("args: --model-name={{.Name}} (the InferenceService's name, the route KServe uses)")
    http, grpc = _flag(args, "--http-port"), _flag(args, "--grpc-port")
    if not ports or ports[0].get("name") != "http1" or str(ports[0]["containerPort"]) != http or http != "8080":
        errors.append(f"ports[0]: http1 on --http-port, 8080 (KServe routes to the first port); got {ports[:1]} and {http}")
    h2c = [p for p in ports if p.get("name") == "h2c"]
    if len(h2c) != 1 or str(h2c[0]["containerPort"]) != grpc:
        errors.append(f"ports: one h2c port on --grpc-port {grpc}; got {h2c}")
    for key, path in (("startupProbe", "/v2/health/ready"), ("readinessProbe", "/v2/health/ready"), ("livenessProbe", "/v2/health/live")):
        get = container.get(key, {}).get("httpGet", {})
        if get.get("path") != path or str(get.get("port")) != http:
            errors.append(f"{key}: GET {path} on the HTTP port; got {get}")
    notes = spec.get("annotations", {})
    if notes.get("prometheus.kserve.io/port") != _flag(args, "--metrics-port") or notes.get("prometheus.kserve.io/path") != "/metrics":
        errors.append(f"annotations: prometheus.kserve.io/port = --metrics-port, path /metrics; got {notes}")
    if set(spec.get("protocolVersions", [])) != {"v2", "grpc-v2"}:
        errors.append(f"protocolVersions: v2 and grpc-v2; got {spec.get('protocolVersions')}")
    return errors
