#!/usr/bin/env bash
# The main job on one machine: a controller on its embedded SQLite, a local agent probing this machine,
# and a second agent declaring GPUs (capacity planning), then the node list and capacity.
#   bash scripts/demo.sh           run, show, stop (state stays in $FLEET_DEMO_DIR)
#   bash scripts/demo.sh --keep    leave the controller and agents running
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate

DIR=${FLEET_DEMO_DIR:-$(mktemp -d -t fleet-demo.XXXXXX)}
PORT=${FLEET_DEMO_PORT:-50051}
export FLEET_CONTROLLER=127.0.0.1:$PORT FLEET_DATA_DIR=$DIR/controller
pids=()
cleanup() { [ "${KEEP:-0}" = 1 ] || kill "${pids[@]}" 2>/dev/null || true; }
trap cleanup EXIT
KEEP=0; [ "${1:-}" = "--keep" ] && KEEP=1

echo "== controller (data in $DIR/controller, logs in $DIR/*.log)"
fleet controller run --data-dir "$FLEET_DATA_DIR" --listen "$FLEET_CONTROLLER" --heartbeat-interval 1 \
  --offline-after 5 >"$DIR/controller.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$FLEET_DATA_DIR/admin-token" ] && fleet nodes >/dev/null 2>&1 && break; sleep 0.2; done
JOIN=$(cat "$FLEET_DATA_DIR/join-token")

echo "== agents: this machine as it is, and two declared-GPU nodes (8xA100-80GB, 2xRTX4090) for planning"
fleet agent run --join-token "$JOIN" --data-dir "$DIR/agent-local" --name local >"$DIR/agent-local.log" 2>&1 &
pids+=($!)
fleet agent run --join-token "$JOIN" --data-dir "$DIR/agent-a100" --name gpu-a100 --simulate-gpus 8xA100-80GB \
  --declare-engines vllm,llama.cpp >"$DIR/agent-a100.log" 2>&1 &
pids+=($!)
fleet agent run --join-token "$JOIN" --data-dir "$DIR/agent-4090" --name gpu-4090 --simulate-gpus 2xRTX4090 \
  --declare-engines vllm,llama.cpp >"$DIR/agent-4090.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ "$(fleet nodes -o json | python -c 'import json,sys; print(sum(n["state"]=="ready" for n in json.load(sys.stdin)))')" = 3 ] && break; sleep 0.3; done

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
if [ "$KEEP" = 1 ]; then
  echo "still running (pids ${pids[*]}); try: FLEET_CONTROLLER=$FLEET_CONTROLLER FLEET_DATA_DIR=$FLEET_DATA_DIR fleet nodes"
fi
