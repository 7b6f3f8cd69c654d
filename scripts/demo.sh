#!/usr/bin/env bash
# The main job on one machine: a controller on its embedded SQLite, a local agent probing this machine,
# and two agents declaring GPUs (capacity planning), then placements, capacity and a drain plan.
#   bash scripts/demo.sh           run, show, stop (state and logs stay in $FLEET_DEMO_DIR)
#   bash scripts/demo.sh --keep    leave the controller and agents running
# Ports: free ones are picked (FLEET_DEMO_PORT / FLEET_DEMO_HTTP_PORT choose them). Every daemon is checked
# to be up before the next step; if one is not, its own last log lines are printed and the demo stops.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${FLEET_DEMO_NO_SETUP:-0}" != 1 ]; then  # 1: use the `fleet` already on PATH (tests)
  bash scripts/setup.sh
  # shellcheck disable=SC1091
  . .venv/bin/activate
fi

KEEP=0; [ "${1:-}" = "--keep" ] && KEEP=1
DIR=${FLEET_DEMO_DIR:-$(mktemp -d -t fleet-demo.XXXXXX)}
mkdir -p "$DIR"
free_port() { python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT=${FLEET_DEMO_PORT:-$(free_port)}
HTTP_PORT=${FLEET_DEMO_HTTP_PORT:-$(free_port)}
export FLEET_CONTROLLER=127.0.0.1:$PORT FLEET_DATA_DIR=$DIR/controller FLEET_HTTP=http://127.0.0.1:$HTTP_PORT
# Generous: both cores may be busy with something else.
WAIT=${FLEET_DEMO_WAIT:-180}

pids=()
cleanup() { if [ "$KEEP" = 0 ] && [ "${#pids[@]}" -gt 0 ]; then kill "${pids[@]}" 2>/dev/null || true; fi; }
trap cleanup EXIT

# give_up NAME LOG WHY: the daemon's own words, then stop (the trap stops the others).
give_up() {
  echo "error: $1 $3; last lines of $2:" >&2
  tail -n 25 "$2" >&2 || true
  exit 1
}

# wait_up NAME PID LOG CHECK...: until CHECK succeeds; stop at once if the daemon exits or time runs out.
wait_up() {
  local name=$1 pid=$2 log=$3; shift 3
  local deadline=$((SECONDS + WAIT))
  until "$@" >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" && code=0 || code=$?
      give_up "$name" "$log" "exited (code $code)"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      give_up "$name" "$log" "is not up after ${WAIT}s"
    fi
    sleep 0.3
  done
}

node_ready() { fleet node describe "$1" -o json | python -c 'import json, sys; sys.exit(json.load(sys.stdin)["state"] != "ready")'; }

echo "== controller: gRPC $FLEET_CONTROLLER, HTTP ${FLEET_HTTP#http://} (data in $DIR/controller, logs in $DIR/*.log)"
fleet controller run --data-dir "$FLEET_DATA_DIR" --listen "$FLEET_CONTROLLER" --http-listen "127.0.0.1:$HTTP_PORT" \
  --heartbeat-interval 1 --offline-after 5 >"$DIR/controller.log" 2>&1 &
pids+=($!)
wait_up controller "$!" "$DIR/controller.log" fleet nodes
JOIN=$(cat "$FLEET_DATA_DIR/join-token")

echo "== agents: this machine as it is, and two declared-GPU nodes (8xA100-80GB, 2xRTX4090) for planning"
start_agent() {
  local name=$1; shift
  fleet agent run --join-token "$JOIN" --data-dir "$DIR/agent-$name" --name "$name" "$@" >"$DIR/agent-$name.log" 2>&1 &
  pids+=($!)
  agent_pids[$name]=$!
}
declare -A agent_pids
start_agent local
start_agent gpu-a100 --simulate-gpus 8xA100-80GB --declare-engines vllm,llama.cpp
start_agent gpu-4090 --simulate-gpus 2xRTX4090 --declare-engines vllm,llama.cpp
for name in local gpu-a100 gpu-4090; do
  wait_up "agent $name" "${agent_pids[$name]}" "$DIR/agent-$name.log" node_ready "$name"
done

echo "== fleet nodes"; fleet nodes
echo "== fleet estimate qwen2-72b --quant awq --gpu A100-80GB"; fleet estimate qwen2-72b --quant awq --gpu A100-80GB
echo "== fleet place qwen2-72b --quant awq --context 8192 --explain"
fleet place qwen2-72b --quant awq --context 8192 --explain
echo "== fleet place llama3.1-8b --replicas 2 --context 8192   (no --quant: the best quality that fits)"
fleet place llama3.1-8b --replicas 2 --context 8192
echo "== fleet place llama3.1-405b --quant awq   (does not fit: exit 2 and the closest candidate)"
fleet place llama3.1-405b --quant awq || echo "(exit $?)"
echo "== fleet capacity"; fleet capacity
echo "== fleet deployments"; fleet deployments
echo "== fleet drain gpu-a100 --dry-run"; fleet drain gpu-a100 --dry-run
echo "== fleet status"; fleet status
echo "== the console: $FLEET_HTTP/ (with --keep; it asks for a viewer key, \`fleet apikey create --name me --role viewer\`, as the password)"
if [ "$KEEP" = 1 ]; then
  echo "still running (pids ${pids[*]}); try:"
  echo "  export FLEET_CONTROLLER=$FLEET_CONTROLLER FLEET_DATA_DIR=$FLEET_DATA_DIR FLEET_HTTP=$FLEET_HTTP; fleet nodes"
  echo "stop them with: kill ${pids[*]}"
fi
