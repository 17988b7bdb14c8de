#!/usr/bin/env bash
# Validate the deployment artefacts under deploy/ offline. Exits non-zero if anything fails.
#
#   scripts/validate-manifests.sh
#
# Checks:
#   k8s-files       every file kustomization.yaml lists exists, every manifest is listed
#   k8s-schema      every manifest in deploy/k8s against the Kubernetes OpenAPI schemas
#                   (kubernetes-validate --strict, offline; installed with pip if missing),
#                   for each version in $K8S_VERSIONS
#   k8s-kustomize   `kubectl kustomize deploy/k8s` renders, and the rendered output validates
#                   (skipped without kubectl)
#   embedded-toml   routes.toml / sync.toml inside the ConfigMaps parse as TOML; with
#                   $STRANGLER_GATEWAY_BIN / $CDC_SYNC_BIN set, also `check` them with the binaries
#   otel            collector.yaml parses and its pipelines only name defined components;
#                   prometheus.yml parses; cdc-sync-rules.yml passes `promtool check rules` and its
#                   unit tests (`promtool test rules cdc-sync-rules.test.yml`)
#   grafana         the dashboard JSON parses; panels have unique ids, every query has an expr and
#                   every metric it names is exported by one of our binaries
#   systemd         `systemd-analyze verify` on the units (skipped without systemd-analyze);
#                   binaries not installed on this machine are not an error
#   shell           bash -n (and shellcheck when installed) on deploy/ scripts
#
# Environment:
#   K8S_VERSIONS          space-separated Kubernetes versions to validate against
#                         (default "1.29.0 1.37.0": the oldest we support and the newest schema)
#   STRANGLER_GATEWAY_BIN path to strangler-gateway, to run `check --no-resolve` on the ConfigMap's
#                         routes.toml (in-cluster Service names do not resolve here)
#   CDC_SYNC_BIN          path to cdc-sync, to run `check` on the ConfigMap's sync files
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEPLOY=$ROOT/deploy
K8S=$DEPLOY/k8s
K8S_VERSIONS=${K8S_VERSIONS:-"1.29.0 1.37.0"}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

declare -a RESULTS=()
FAILED=0

pass() { RESULTS+=("PASS  $1"); echo "--> PASS $1"; }
fail() { RESULTS+=("FAIL  $1"); echo "--> FAIL $1"; FAILED=1; }
skip() { RESULTS+=("SKIP  $1"); echo "--> SKIP $1"; }
section() { printf '\n== %s\n' "$1"; }

PY=python3
command -v "$PY" >/dev/null || { echo "python3 is required" >&2; exit 2; }

# pip_ensure MODULE PACKAGE: import MODULE or pip-install PACKAGE.
pip_ensure() {
    "$PY" -c "import $1" 2>/dev/null && return 0
    echo "installing $2 with pip"
    "$PY" -m pip install --quiet "$2" >/dev/null 2>&1 \
        || "$PY" -m pip install --quiet --user "$2" >/dev/null 2>&1 \
        || "$PY" -m pip install --quiet --break-system-packages "$2" >/dev/null 2>&1
    "$PY" -c "import $1" 2>/dev/null
}

# ------------------------------------------------------------------------------ prerequisites
section "prerequisites"
if ! pip_ensure yaml PyYAML; then
    echo "PyYAML is not available and could not be installed" >&2
    exit 2
fi
KV=""
if command -v kubernetes-validate >/dev/null 2>&1; then
    KV=kubernetes-validate
elif pip_ensure kubernetes_validate kubernetes-validate && command -v kubernetes-validate >/dev/null 2>&1; then
    KV=kubernetes-validate
elif "$PY" -c "import kubernetes_validate" 2>/dev/null; then
    KV="$PY -m kubernetes_validate"
fi
echo "python: $("$PY" --version 2>&1); kubernetes-validate: ${KV:-missing}"

# ------------------------------------------------------------------------------ k8s file list
section "k8s-files: kustomization.yaml ⇄ files"
mapfile -t MANIFESTS < <(cd "$K8S" && find . -maxdepth 1 -type f \( -name '*.yaml' -o -name '*.yml' \) \
    ! -name 'kustomization.yaml' ! -name 'kustomization.yml' -printf '%P\n' | sort)
if "$PY" - "$K8S" "${MANIFESTS[@]}" <<'PYEOF'
import os, sys, yaml
k8s, files = sys.argv[1], set(sys.argv[2:])
with open(os.path.join(k8s, "kustomization.yaml")) as f:
    kust = yaml.safe_load(f)
listed = kust.get("resources") or []
problems = []
for r in listed:
    if not os.path.exists(os.path.join(k8s, r)):
        problems.append(f"listed in kustomization.yaml but missing: {r}")
if len(listed) != len(set(listed)):
    problems.append("kustomization.yaml lists a resource twice")
for f in sorted(files - set(listed)):
    problems.append(f"manifest not listed in kustomization.yaml resources: {f}")
for p in problems:
    print("  " + p)
print(f"  {len(listed)} resources listed, {len(files)} manifest files found")
sys.exit(1 if problems else 0)
PYEOF
then pass "k8s-files"; else fail "k8s-files"; fi

# ------------------------------------------------------------------------------ k8s schemas
section "k8s-schema: kubernetes-validate --strict"
if [[ -z $KV ]]; then
    fail "k8s-schema (kubernetes-validate not installed and pip could not install it)"
else
    for v in $K8S_VERSIONS; do
        # Every document must at least be YAML with apiVersion/kind (kubernetes-validate skips
        # what it cannot identify with only a warning).
        if ! "$PY" - "${MANIFESTS[@]/#/$K8S/}" <<'PYEOF'
import sys, yaml
bad = 0
for path in sys.argv[1:]:
    try:
        docs = [d for d in yaml.safe_load_all(open(path)) if d is not None]
    except yaml.YAMLError as e:
        print(f"  {path}: YAML error: {e}"); bad += 1; continue
    if not docs:
        print(f"  {path}: no documents"); bad += 1
    for i, d in enumerate(docs):
        if not isinstance(d, dict) or not d.get("apiVersion") or not d.get("kind"):
            print(f"  {path}: document {i + 1} has no apiVersion/kind"); bad += 1
sys.exit(1 if bad else 0)
PYEOF
        then
            fail "k8s-schema $v (unparseable manifests)"
            continue
        fi
        out=$($KV --strict --kubernetes-version "$v" "${MANIFESTS[@]/#/$K8S/}" 2>&1)
        rc=$?
        echo "$out" | grep -v '^INFO' | sed 's/^/  /'
        n=$(echo "$out" | grep -c 'passed for resource')
        if [[ $rc -eq 0 ]] && ! echo "$out" | grep -qE '^(ERROR|WARN)'; then
            pass "k8s-schema $v ($n resources)"
        else
            fail "k8s-schema $v"
        fi
    done
fi

# ------------------------------------------------------------------------------ kustomize build
section "k8s-kustomize: render the base"
if command -v kubectl >/dev/null 2>&1; then
    if kubectl kustomize "$K8S" >"$WORK/rendered.yaml" 2>"$WORK/kustomize.err"; then
        n=$(grep -c '^kind:' "$WORK/rendered.yaml")
        if [[ -n $KV ]]; then
            v=${K8S_VERSIONS##* }
            out=$($KV --strict --kubernetes-version "$v" "$WORK/rendered.yaml" 2>&1); rc=$?
            echo "$out" | grep -v '^INFO' | sed 's/^/  /'
            if [[ $rc -eq 0 ]] && ! echo "$out" | grep -qE '^(ERROR|WARN)'; then
                pass "k8s-kustomize ($n resources rendered and valid)"
            else
                fail "k8s-kustomize (rendered output does not validate)"
            fi
        else
            pass "k8s-kustomize ($n resources rendered)"
        fi
    else
        sed 's/^/  /' "$WORK/kustomize.err"
        fail "k8s-kustomize"
    fi
else
    skip "k8s-kustomize (kubectl not installed)"
fi

# ------------------------------------------------------------------------------ embedded TOML
section "embedded-toml: routes.toml and sync.toml in the ConfigMaps"
if "$PY" - "$K8S" "$WORK" <<'PYEOF'
import glob, os, sys, tomllib, yaml
k8s, work = sys.argv[1], sys.argv[2]
bad = found = 0
for path in sorted(glob.glob(os.path.join(k8s, "*.yaml"))):
    for doc in yaml.safe_load_all(open(path)):
        if not doc or doc.get("kind") != "ConfigMap":
            continue
        name = doc["metadata"]["name"]
        for key, text in (doc.get("data") or {}).items():
            if not key.endswith(".toml"):
                continue
            found += 1
            try:
                tomllib.loads(text)
            except tomllib.TOMLDecodeError as e:
                print(f"  {os.path.basename(path)}: configmap/{name} {key}: {e}"); bad += 1
            out = os.path.join(work, "toml", name)
            os.makedirs(out, exist_ok=True)
            with open(os.path.join(out, key), "w") as f:
                f.write(text)
print(f"  {found} TOML files parsed")
sys.exit(1 if bad or not found else 0)
PYEOF
then pass "embedded-toml (syntax)"; else fail "embedded-toml (syntax)"; fi
if [[ -n ${STRANGLER_GATEWAY_BIN:-} ]]; then
    # --no-resolve also reads no secrets: the admin token and the dry-run secret the file names
    # (admin_token_env, shadow_secret_env) need not be set here, only named.
    rc=0
    "$STRANGLER_GATEWAY_BIN" check --no-resolve "$WORK/toml/strangler-routes/routes.toml" >"$WORK/gw-check.out" 2>&1 || rc=$?
    sed 's/^/  /' "$WORK/gw-check.out"
    if [[ $rc -eq 0 ]]; then
        pass "embedded-toml (strangler-gateway check --no-resolve routes.toml)"
    else
        fail "embedded-toml (strangler-gateway check --no-resolve routes.toml)"
    fi
else
    skip "embedded-toml: strangler-gateway check (set STRANGLER_GATEWAY_BIN)"
fi
if [[ -n ${CDC_SYNC_BIN:-} ]]; then
    ok=1
    for f in "$WORK"/toml/cdc-sync-config/*.toml; do
        # url_env must resolve for an offline check; placeholders are enough.
        env CDC_LEGACY_DATABASE_URL="host=x" CDC_CATALOG_DATABASE_URL="host=x" CDC_ORDERS_DATABASE_URL="host=x" \
            "$CDC_SYNC_BIN" check "$f" >"$WORK/cdc-check.out" 2>&1 || ok=0
        sed 's/^/  /' "$WORK/cdc-check.out"
    done
    if [[ $ok -eq 1 ]]; then pass "embedded-toml (cdc-sync check)"; else fail "embedded-toml (cdc-sync check)"; fi
else
    skip "embedded-toml: cdc-sync check (set CDC_SYNC_BIN)"
fi

# ------------------------------------------------------------------------------ OTel + Prometheus
section "otel: collector.yaml and prometheus.yml"
if "$PY" - "$DEPLOY/otel/collector.yaml" <<'PYEOF'
import sys, yaml
cfg = yaml.safe_load(open(sys.argv[1]))
bad = []
for section in ("receivers", "processors", "exporters", "service"):
    if not isinstance(cfg.get(section), dict):
        bad.append(f"missing section {section}")
pipelines = (cfg.get("service") or {}).get("pipelines") or {}
if not pipelines:
    bad.append("service.pipelines is empty")
for name, p in pipelines.items():
    for kind in ("receivers", "processors", "exporters"):
        for comp in p.get(kind, []):
            if comp not in (cfg.get(kind) or {}):
                bad.append(f"pipeline {name}: {kind[:-1]} {comp!r} is not defined")
    if not p.get("receivers") or not p.get("exporters"):
        bad.append(f"pipeline {name}: needs receivers and exporters")
for ext in (cfg.get("service") or {}).get("extensions", []):
    if ext not in (cfg.get("extensions") or {}):
        bad.append(f"extension {ext!r} is not defined")
otlp = (cfg.get("receivers") or {}).get("otlp", {}).get("protocols", {})
for proto in ("grpc", "http"):
    if proto not in otlp:
        bad.append(f"otlp receiver lacks {proto}")
for b in bad:
    print("  " + b)
print(f"  pipelines: {', '.join(pipelines)}")
sys.exit(1 if bad else 0)
PYEOF
then pass "otel collector.yaml"; else fail "otel collector.yaml"; fi
if "$PY" - "$DEPLOY/otel/prometheus.yml" <<'PYEOF'
import sys, yaml
cfg = yaml.safe_load(open(sys.argv[1]))
jobs = [j.get("job_name") for j in cfg.get("scrape_configs") or []]
bad = []
if not jobs:
    bad.append("no scrape_configs")
if len(jobs) != len(set(jobs)):
    bad.append("duplicate job_name")
for j in cfg.get("scrape_configs") or []:
    if not (j.get("static_configs") or j.get("kubernetes_sd_configs")):
        bad.append(f"job {j.get('job_name')}: no targets")
for b in bad:
    print("  " + b)
print(f"  jobs: {', '.join(map(str, jobs))}")
sys.exit(1 if bad else 0)
PYEOF
then
    if command -v promtool >/dev/null 2>&1; then
        # promtool also checks that credentials_file exists; only syntax matters here.
        rc=0
        promtool check config --syntax-only "$DEPLOY/otel/prometheus.yml" >"$WORK/promtool.out" 2>&1 || rc=$?
        sed 's/^/  /' "$WORK/promtool.out"
        if [[ $rc -eq 0 ]]; then
            pass "otel prometheus.yml (promtool)"
        elif ! grep -v -e 'kubernetes_sd_configs not found' -e 'unmarshal errors' -e '^ *$' \
                -e 'Checking ' -e 'FAILED: parsing YAML' "$WORK/promtool.out" | grep -q .; then
            # Debian builds Prometheus without Kubernetes service discovery: its promtool rejects
            # only the kubernetes_sd_configs sections, which the Python check above already read.
            pass "otel prometheus.yml (promtool; kubernetes_sd_configs not known to this promtool build)"
        else
            fail "otel prometheus.yml (promtool)"
        fi
    else
        pass "otel prometheus.yml (parsed; promtool not installed)"
    fi
else
    fail "otel prometheus.yml"
fi

# ------------------------------------------------------------------------------ alert rules
section "otel: cdc-sync alert rules (promtool check rules, promtool test rules)"
if command -v promtool >/dev/null 2>&1; then
    if (cd "$DEPLOY/otel" && promtool check rules cdc-sync-rules.yml && promtool test rules cdc-sync-rules.test.yml) \
            >"$WORK/promtool-rules.out" 2>&1; then
        pass "otel cdc-sync-rules.yml (checked, unit tests pass)"
    else
        sed 's/^/  /' "$WORK/promtool-rules.out"
        fail "otel cdc-sync-rules.yml"
    fi
else
    pass "otel cdc-sync-rules.yml (promtool not installed: not checked)"
fi

# ------------------------------------------------------------------------------ Grafana
section "grafana: dashboard JSON"
if "$PY" - "$DEPLOY/otel/grafana-dashboard.json" "$ROOT" <<'PYEOF'
import json, pathlib, re, sys
try:
    d = json.load(open(sys.argv[1]))
except json.JSONDecodeError as e:
    print(f"  invalid JSON: {e}"); sys.exit(1)
bad = []
for k in ("title", "uid", "panels", "schemaVersion"):
    if k not in d:
        bad.append(f"missing {k}")
ids, queries = [], 0
for p in d.get("panels", []):
    ids.append(p.get("id"))
    if p.get("type") == "row":
        continue
    if not p.get("targets"):
        bad.append(f"panel {p.get('title')!r} has no targets")
    for t in p.get("targets", []):
        queries += 1
        if not (t.get("expr") or "").strip():
            bad.append(f"panel {p.get('title')!r} target {t.get('refId')} has no expr")
    if "gridPos" not in p:
        bad.append(f"panel {p.get('title')!r} has no gridPos")
if len(ids) != len(set(ids)):
    bad.append("duplicate panel ids")
# Every metric a query names must be exported by one of our binaries (its name appears in their
# sources), so renaming a metric without the dashboard fails here, not on a blank panel.
exprs = [t.get("expr") or "" for p in d.get("panels", []) for t in p.get("targets", [])]
names = {m for e in exprs for m in re.findall(r"\b((?:strangler|cdc_sync)_[a-z0-9_]+)", e)}
root = pathlib.Path(sys.argv[2])
sources = "".join(
    f.read_text(errors="replace")
    for d_ in ("gateway/src", "cdc-sync/src", "extracted/kit/src", "legacy-monolith/src")
    for f in (root / d_).rglob("*.rs")
)
for n in sorted(names):
    if re.sub(r"_(bucket|count|sum)$", "", n) not in sources:
        bad.append(f"metric {n} is queried but no binary exports it")
if not any(b.startswith("metric ") for b in bad):
    print(f"  {len(names)} metric names, all exported")
for b in bad:
    print("  " + b)
print(f"  {len(ids)} panels, {queries} queries")
sys.exit(1 if bad else 0)
PYEOF
then pass "grafana dashboard"; else fail "grafana dashboard"; fi

# ------------------------------------------------------------------------------ systemd
section "systemd: systemd-analyze verify"
if command -v systemd-analyze >/dev/null 2>&1; then
    # Verify copies (so drop-ins next to the template are picked up and nothing is installed).
    # Messages about binaries that are not installed on this machine are expected; anything
    # else is a failure. RestartSteps/RestartMaxDelaySec are unknown before systemd 254.
    cp -r "$DEPLOY/systemd" "$WORK/units"
    sdver=$(systemd-analyze --version | awk 'NR==1 {print $2}')
    ok=1
    for unit in "$WORK"/units/*.service; do
        name=$(basename "$unit")
        [[ $name == *@.service ]] && name=${name/@.service/@example.service}
        [[ $name != "$(basename "$unit")" ]] && cp "$unit" "$WORK/units/$name"
        out=$(cd "$WORK/units" && systemd-analyze verify "$name" 2>&1)
        unexpected=$(echo "$out" | grep -v '^$' \
            | grep -vE 'Command /usr/local/(bin|lib/strangler)/[^ ]+ is not executable: No such file or directory' \
            | { if ((sdver < 254)); then grep -vE "backoff\.conf:[0-9]+: Unknown key '(RestartSteps|RestartMaxDelaySec)'"; else cat; fi; } \
            || true)
        if [[ -n $unexpected ]]; then
            echo "$unexpected" | sed "s|$WORK/units/||; s/^/  /"
            ok=0
            echo "  $name: FAILED"
        else
            echo "  $name: ok (systemd $sdver)"
        fi
    done
    if [[ $ok -eq 1 ]]; then pass "systemd units"; else fail "systemd units"; fi
else
    skip "systemd units (systemd-analyze not installed)"
fi

# ------------------------------------------------------------------------------ shell
section "shell: scripts under deploy/"
ok=1
while IFS= read -r -d '' f; do
    if head -n1 "$f" | grep -qE '^#!.*\b(ba)?sh'; then
        bash -n "$f" || ok=0
        if command -v shellcheck >/dev/null 2>&1; then shellcheck "$f" || ok=0; fi
        echo "  $(realpath --relative-to="$ROOT" "$f")"
    fi
done < <(find "$DEPLOY" -path "$DEPLOY/local" -prune -o -type f -perm -u+x -print0)
if [[ $ok -eq 1 ]]; then pass "shell scripts"; else fail "shell scripts"; fi

# ------------------------------------------------------------------------------ summary
printf '\n== summary\n'
printf '  %s\n' "${RESULTS[@]}"
if [[ $FAILED -ne 0 ]]; then
    echo "validate-manifests: FAILED"
    exit 1
fi
echo "validate-manifests: all checks passed"
