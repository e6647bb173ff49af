#!/usr/bin/env bash
# Floe's test environment: real servers on 127.0.0.1, installed and started by this script.
#
#   scripts/test-env.sh up [FIXTURE...]    install what is missing, then start the fixtures
#   scripts/test-env.sh down [FIXTURE...]  stop fixtures this script started (by pid file)
#   scripts/test-env.sh status   say which fixtures are running and ready
#   scripts/test-env.sh install  only install (Python venv, tansu)
#   scripts/test-env.sh env      print the variables the tests read, as shell exports
#
# Fixtures:
#   kafka  tansu (a Kafka-protocol broker) with SQLite storage     127.0.0.1:$FLOE_TEST_KAFKA_PORT
#   moto   S3 + S3 Tables control plane, via scripts/fixtures/moto_server.py
#                                                                   127.0.0.1:$FLOE_TEST_MOTO_PORT
#   weed   SeaweedFS `weed mini`: S3 and an Iceberg REST catalog (SigV4 / OAuth2), with
#          the table bucket floe-tb                                127.0.0.1:8333 (S3), :8181 (REST)
#
# Everything is cached under $FLOE_CACHE (default ~/.cache/floe): the venv, the tansu binary,
# and the fixtures' data, logs and pid files (in $FLOE_CACHE/env). Idempotent: running `up`
# twice leaves running fixtures alone.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${FLOE_CACHE:-$HOME/.cache/floe}
TOOLS=$CACHE/tools
VENV=$CACHE/venv
RUN=$CACHE/env
TANSU_VERSION=0.6.0
KAFKA_PORT=${FLOE_TEST_KAFKA_PORT:-19092}
MOTO_PORT=${FLOE_TEST_MOTO_PORT:-15000}
WEED_S3_PORT=8333
WEED_REST_PORT=8181
WEED_TABLE_BUCKET=floe-tb
# Static credentials of the SeaweedFS identity the tests sign with.
WEED_ACCESS_KEY=${FLOE_TEST_WEED_ACCESS_KEY:-floetest}
WEED_SECRET_KEY=${FLOE_TEST_WEED_SECRET_KEY:-floetest-secret}

log() { printf 'test-env: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- install

install_python() {
  local req=$ROOT/scripts/requirements-test.txt stamp=$VENV/.floe-requirements
  if [[ -x $VENV/bin/python && -f $stamp ]] && cmp -s "$req" "$stamp"; then
    return
  fi
  log "installing Python fixtures into $VENV"
  command -v python3 >/dev/null || die "python3 is required"
  [[ -x $VENV/bin/python ]] || python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
  cp "$req" "$stamp"
}

install_tansu() {
  if [[ -x $TOOLS/bin/tansu ]] && "$TOOLS/bin/tansu" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
    return
  fi
  log "building tansu $TANSU_VERSION (a large Rust build: 15-30 minutes on 2 cores, cached afterwards)"
  mkdir -p "$TOOLS"
  CARGO_TARGET_DIR=$CACHE/tansu-target cargo install --quiet --root "$TOOLS" \
    tansu --version "$TANSU_VERSION" --locked --features libsql
  rm -rf "$CACHE/tansu-target"
}

install_all() {
  mkdir -p "$CACHE"
  install_python
  install_tansu
}

# ---------------------------------------------------------------- process control

# The program each fixture runs: a pid file is only believed when the process with that pid
# still runs it (a pid left from an earlier boot may belong to something else by now).
declare -A PROGRAM=([kafka]=tansu [moto]=moto_server.py [weed]=weed)

pid_of() { # prints the pid of a running fixture, or fails
  local f=$RUN/$1.pid
  [[ -f $f ]] || return 1
  local pid
  pid=$(<"$f")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -q -- "${PROGRAM[$1]}" || return 1
  echo "$pid"
}

# start NAME DIR CMD... : runs CMD in DIR in the background, logging to $RUN/NAME.log
start() {
  local name=$1 dir=$2
  shift 2
  if pid_of "$name" >/dev/null; then
    log "$name already running (pid $(pid_of "$name"))"
    return
  fi
  mkdir -p "$dir"
  (cd "$dir" && exec setsid "$@" >"$RUN/$name.log" 2>&1 </dev/null) &
  echo $! >"$RUN/$name.pid"
  log "$name started (pid $!, log $RUN/$name.log)"
}

# alive PID : whether PID is a live process (not gone, not a zombie). Unlike pid_of it does
# not look at the command line, which is still the forking shell's until the exec lands.
alive() {
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $state && $state != Z ]]
}

# wait_ready NAME SECONDS CHECK... : polls CHECK until it succeeds
wait_ready() {
  local name=$1 seconds=$2 pid
  shift 2
  pid=$(<"$RUN/$name.pid")
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if ! alive "$pid"; then
      tail -n 30 "$RUN/$name.log" >&2 || true
      die "$name exited during start-up (log above)"
    fi
    if ((SECONDS > deadline)); then
      tail -n 30 "$RUN/$name.log" >&2 || true
      die "$name not ready after ${seconds}s (log above)"
    fi
    sleep 0.5
  done
  log "$name ready"
}

stop() {
  local name=$1 pid
  if ! pid=$(pid_of "$name"); then
    rm -f "$RUN/$name.pid"
    return
  fi
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  rm -f "$RUN/$name.pid"
  log "$name stopped (pid $pid)"
}

# ---------------------------------------------------------------- readiness checks

kafka_ready() { timeout 2 "$TOOLS/bin/tansu" topic list --broker "tcp://127.0.0.1:$KAFKA_PORT"; }
moto_ready() { curl -sf -o /dev/null "http://127.0.0.1:$MOTO_PORT/moto-api/config"; }
# /v1/config answers before credentials and the table bucket are loaded (and is not even
# authenticated): wait for signed requests on both ports instead.
weed_ready() {
  local ice s3
  ice=$(curl -s -o /dev/null -w '%{http_code}' --aws-sigv4 "aws:amz:us-east-1:s3tables" \
    --user "$WEED_ACCESS_KEY:$WEED_SECRET_KEY" "http://127.0.0.1:$WEED_REST_PORT/v1/$WEED_TABLE_BUCKET/namespaces")
  s3=$(curl -s -o /dev/null -w '%{http_code}' --aws-sigv4 "aws:amz:us-east-1:s3" \
    --user "$WEED_ACCESS_KEY:$WEED_SECRET_KEY" "http://127.0.0.1:$WEED_S3_PORT/")
  [[ $ice == 200 && $s3 == 200 ]]
}

# ---------------------------------------------------------------- fixtures

start_kafka() {
  if ! pid_of kafka >/dev/null; then rm -rf "$RUN/kafka"; fi
  # tansu resolves the sqlite:// path against its working directory.
  start kafka "$RUN/kafka" "$TOOLS/bin/tansu" broker \
    --storage-engine sqlite://tansu.db \
    --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT"
  wait_ready kafka 60 kafka_ready
}

start_moto() {
  start moto "$RUN/moto" "$VENV/bin/python" "$ROOT/scripts/fixtures/moto_server.py" \
    --host 127.0.0.1 --port "$MOTO_PORT"
  wait_ready moto 60 moto_ready
}

start_weed() {
  if ! pid_of weed >/dev/null; then rm -rf "$RUN/weed"; fi
  mkdir -p "$RUN/weed/data"
  sed -e "s/@ACCESS_KEY@/$WEED_ACCESS_KEY/" -e "s/@SECRET_KEY@/$WEED_SECRET_KEY/" \
    "$ROOT/scripts/fixtures/weed-s3.json" >"$RUN/weed/s3.json"
  # Every flag is given: weed mini fills missing flags from <dir>/mini.options of an earlier
  # run. Its defaults bind to all interfaces and report telemetry; these keep it on loopback.
  rm -f "$RUN/weed/data/mini.options"
  start weed "$RUN/weed" "$VENV/bin/weed" mini \
    -dir="$RUN/weed/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -s3.port="$WEED_S3_PORT" -s3.port.iceberg="$WEED_REST_PORT" \
    -s3.config="$RUN/weed/s3.json" -tableBucket="$WEED_TABLE_BUCKET" \
    -s3.port.lance=0 -webdav=false -admin.ui=false -master.telemetry=false \
    -s3.localSocket="$RUN/weed/s3.sock" -filer.localSocket="$RUN/weed/filer.sock"
  wait_ready weed 120 weed_ready
}

print_env() {
  cat <<EOF
export FLOE_TEST_KAFKA=127.0.0.1:$KAFKA_PORT
export FLOE_TEST_MOTO=http://127.0.0.1:$MOTO_PORT
export FLOE_TEST_WEED_S3=http://127.0.0.1:$WEED_S3_PORT
export FLOE_TEST_WEED_REST=http://127.0.0.1:$WEED_REST_PORT
export FLOE_TEST_WEED_ACCESS_KEY=$WEED_ACCESS_KEY
export FLOE_TEST_WEED_SECRET_KEY=$WEED_SECRET_KEY
export FLOE_TEST_WEED_TABLE_BUCKET=$WEED_TABLE_BUCKET
export FLOE_TEST_PYTHON=$VENV/bin/python
export FLOE_TEST_TANSU=$TOOLS/bin/tansu
EOF
}

status() {
  local name rc=0
  for name in kafka moto weed; do
    if pid=$(pid_of "$name"); then
      if "${name}_ready" >/dev/null 2>&1; then
        echo "$name: running (pid $pid), ready"
      else
        echo "$name: running (pid $pid), NOT ready"
        rc=1
      fi
    else
      echo "$name: stopped"
      rc=1
    fi
  done
  return $rc
}

mkdir -p "$RUN"
case ${1:-} in
  up)
    shift
    fixtures=("${@:-kafka moto weed}")
    # shellcheck disable=SC2068 # word splitting of the default list is wanted
    for f in ${fixtures[@]}; do
      case $f in
        kafka) install_python; install_tansu; start_kafka ;;
        moto) install_python; start_moto ;;
        weed) install_python; start_weed ;;
        *) die "unknown fixture $f (kafka, moto, weed)" ;;
      esac
    done
    print_env >"$RUN/env.sh"
    ;;
  down)
    shift
    fixtures=("${@:-weed moto kafka}")
    # shellcheck disable=SC2068
    for f in ${fixtures[@]}; do stop "$f"; done
    ;;
  status) status ;;
  install) install_all ;;
  env) print_env ;;
  *)
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
