#!/usr/bin/env bash
# nats-cluster.sh — a 3-node NATS JetStream cluster on loopback, for replication tests and demos.
#
#   scripts/nats-cluster.sh start          start n1, n2, n3; prints the client URLs (one line)
#   scripts/nats-cluster.sh stop           kill every node, remove the cluster's directory
#   scripts/nats-cluster.sh status         the URLs and each node's state (up/down)
#   scripts/nats-cluster.sh urls           the client URLs only
#   scripts/nats-cluster.sh kill NAME      kill -9 one node (n1, n2 or n3); its data stays
#   scripts/nats-cluster.sh restart NAME   start a killed node again on its ports and data
#
# Installs `nats-server` through apt-get when it is missing (as scripts/test.sh installs
# packages). Each cluster lives in a fresh temporary directory (configs, JetStream data, logs,
# pids); the file named by MMSB_NATS_STATE (default: $TMPDIR/mmsb-nats-cluster.state) records
# where, so several clusters can run side by side with different MMSB_NATS_STATE values.
# Ports are free loopback ports picked at start. Exit status 2: nats-server is not available.
set -uo pipefail

STATE="${MMSB_NATS_STATE:-${TMPDIR:-/tmp}/mmsb-nats-cluster.state}"
NODES=(n1 n2 n3)

die() { printf 'nats-cluster.sh: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo -n "$@"
  else printf 'nats-cluster.sh: need root to run: %s\n' "$*" >&2; return 1; fi
}

ensure_server() {
  command -v nats-server >/dev/null && return 0
  [ -x /usr/sbin/nats-server ] && { PATH="$PATH:/usr/sbin"; return 0; }
  command -v apt-get >/dev/null || { printf 'nats-cluster.sh: nats-server missing and no apt-get\n' >&2; exit 2; }
  printf 'nats-cluster.sh: installing nats-server (apt-get)\n' >&2
  { as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nats-server ||
    { as_root apt-get update -q && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nats-server; }; } >&2 ||
    { printf 'nats-cluster.sh: could not install nats-server\n' >&2; exit 2; }
  [ -x /usr/sbin/nats-server ] && PATH="$PATH:/usr/sbin"
  command -v nats-server >/dev/null || exit 2
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Nine free ports (client, cluster, monitoring per node), from a random start so that
# clusters started side by side rarely race for the same ones.
pick_ports() {
  local p=$((20000 + RANDOM % 30000)) got=()
  while [ "${#got[@]}" -lt 9 ]; do
    port_free "$p" && got+=("$p")
    p=$((p + 1))
  done
  echo "${got[@]}"
}

dir_of() { [ -f "$STATE" ] && cat "$STATE"; }

urls() {
  local d; d=$(dir_of) || return 1
  local out=()
  for n in "${NODES[@]}"; do out+=("nats://127.0.0.1:$(cat "$d/$n.port")"); done
  (IFS=,; echo "${out[*]}")
}

# A killed node may linger as a zombie until its parent reaps it: that counts as down.
pid_alive() { [ -r "/proc/$1/stat" ] && ! awk '{exit $3 == "Z" ? 0 : 1}' "/proc/$1/stat" 2>/dev/null; }
alive() { local pid; pid=$(cat "$1/$2.pid" 2>/dev/null) && pid_alive "$pid"; }

start_node() { # dir name
  local d="$1" n="$2"
  rm -f "$d/$n.pid"
  # The server writes its own pid file (`pid_file`): setsid may fork, so `$!` is not its pid.
  setsid nats-server -c "$d/$n.conf" >>"$d/$n.log" 2>&1 </dev/null &
  for _ in $(seq 50); do [ -s "$d/$n.pid" ] && return 0; sleep 0.1; done
}

wait_ready() { # dir: every node answers /healthz (JetStream current) within 30 s
  local d="$1" t=0
  while [ "$t" -lt 300 ]; do
    local ok=1 up=0
    for n in "${NODES[@]}"; do
      alive "$d" "$n" || continue
      up=1
      curl -fsS "http://127.0.0.1:$(cat "$d/$n.mport")/healthz" >/dev/null 2>&1 || ok=0
    done
    [ "$up" = 1 ] || return 1
    [ "$ok" = 1 ] && grep -q "metadata leader" "$d"/n?.log 2>/dev/null && return 0
    sleep 0.1; t=$((t + 1))
  done
  return 1
}

cmd_start() {
  ensure_server
  if d=$(dir_of) && [ -d "$d" ]; then die "a cluster already runs in $d (stop it first)"; fi
  local d; d=$(mktemp -d "${TMPDIR:-/tmp}/mmsb-nats.XXXXXX") || die "mktemp failed"
  read -r -a P <<<"$(pick_ports)"
  local routes=""
  for i in 0 1 2; do routes="$routes${routes:+, }\"nats-route://127.0.0.1:${P[$((3 + i))]}\""; done
  for i in 0 1 2; do
    local n=${NODES[$i]}
    echo "${P[$i]}" >"$d/$n.port"
    echo "${P[$((6 + i))]}" >"$d/$n.mport"
    cat >"$d/$n.conf" <<EOF
server_name: $n
pid_file: "$d/$n.pid"
listen: 127.0.0.1:${P[$i]}
http: 127.0.0.1:${P[$((6 + i))]}
jetstream { store_dir: "$d/$n-data", max_memory_store: 256MB, max_file_store: 2GB }
cluster { name: mmsb, listen: 127.0.0.1:${P[$((3 + i))]}, routes: [$routes] }
EOF
  done
  echo "$d" >"$STATE"
  for n in "${NODES[@]}"; do start_node "$d" "$n"; done
  wait_ready "$d" || { tail -n 20 "$d"/n?.log >&2; cmd_stop; die "the cluster did not become ready in 30 s"; }
  urls
}

cmd_stop() {
  local d; d=$(dir_of) || { echo "no cluster"; return 0; }
  for n in "${NODES[@]}"; do
    local pid; pid=$(cat "$d/$n.pid" 2>/dev/null) && kill -9 "$pid" 2>/dev/null
  done
  case "$d" in "${TMPDIR:-/tmp}"/mmsb-nats.*) rm -rf "$d" ;; esac
  rm -f "$STATE"
}

cmd_status() {
  local d; d=$(dir_of) || { echo "no cluster"; return 1; }
  echo "dir: $d"
  echo "urls: $(urls)"
  for n in "${NODES[@]}"; do
    if alive "$d" "$n"; then echo "$n: up"; else echo "$n: down"; fi
  done
}

node_arg() {
  case "${1:-}" in n1 | n2 | n3) ;; *) die "name a node: n1, n2 or n3" ;; esac
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  urls) urls || die "no cluster" ;;
  kill)
    node_arg "${2:-}"; d=$(dir_of) || die "no cluster"
    pid=$(cat "$d/$2.pid" 2>/dev/null) && kill -9 "$pid" 2>/dev/null || die "$2 is not running"
    while pid_alive "$pid"; do sleep 0.05; done ;;
  restart)
    node_arg "${2:-}"; ensure_server; d=$(dir_of) || die "no cluster"
    alive "$d" "$2" && die "$2 is running"
    start_node "$d" "$2"
    # 30 s, as for start: a node restarted while another is down waits for a meta leader
    # election with the rest, which took over 10 s on the loaded test machine.
    for _ in $(seq 300); do curl -fsS "http://127.0.0.1:$(cat "$d/$2.mport")/healthz" >/dev/null 2>&1 && exit 0; sleep 0.1; done
    die "$2 did not become healthy in 30 s" ;;
  *) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 1 ;;
esac
