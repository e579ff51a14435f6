#!/usr/bin/env bash
# Throughput and CPU cost of the gateway, measured in one run beside
# references on this machine (it is shared and noisy: read the ratios, not
# the absolute numbers).
#
#   bash bench/load.sh                      # needs wrk (apt-get install wrk)
#   BASELINE=/path/to/old/embedgate bash bench/load.sh   # also an older build
#
# Each round runs wrk against: the upstream directly; nginx's proxy_pass with
# an upstream keep-alive pool (when nginx is installed: the field's reference
# reverse proxy); the gateway's [passthrough]; the gateway's embed route with
# a live session (identity headers, cached assertion, response rewriting);
# the same two routes of two more gateways logging at RUST_LOG=info to a
# file, one with its access log on and one with it off (the difference is
# the access log's cost); and, with BASELINE, the same two routes of that
# other binary. Rounds are
# interleaved and the medians reported: requests/s, its ratio to the direct
# run, and the proxy process's CPU microseconds per request (from
# /proc/<pid>/stat), the figure that separates proxies when the load
# generator is the bottleneck.
#
# With redis-server installed (or STORE=redis; STORE=memory skips it), a
# second gateway with [store] kind = "redis" runs beside the first, and each
# round also measures its embed route: its row sits beside the memory
# store's, and a last line gives the Redis commands per proxied request in
# steady state (CONFIG RESETSTAT before each of its wrk runs, then the calls=
# of INFO commandstats, except CONFIG and INFO, over wrk's request count)
# and redis-server's own CPU microseconds per request.
#
# With two or more CPUs, wrk, the upstream and redis-server are pinned to
# CPU 0 and each proxy (one worker thread / process) to CPU 1. Everything
# listens on 127.0.0.1 and is stopped by PID at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)"; exit 1; }

duration=${DURATION:-5}
connections=${CONNECTIONS:-32}
rounds=${ROUNDS:-3}
store=${STORE:-}
if [ -z "$store" ]; then
  command -v redis-server >/dev/null && store=redis || store=memory
fi
case $store in
  redis) for t in redis-server redis-cli openssl; do
           command -v "$t" >/dev/null || { echo "STORE=redis needs $t (apt-get install redis-server openssl)"; exit 1; }
         done ;;
  memory) ;;
  *) echo "STORE must be redis or memory, not $store"; exit 1 ;;
esac
cargo build --release --quiet --bin embedgate --example bench_upstream

. bench/common.sh
bench_setup
cat > "$work/gateway.toml" <<TOML
[server]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1"
worker_threads = 1
[api]
token_sha256 = ["$hash"]
[rate_limit]
pat_create_per_minute = 1000
[[users]]
email = "bench@example.com"
[[apps]]
id = "$app"
upstream = "http://$upstream"
allow_users = ["*"]
[passthrough]
upstream = "http://$upstream"
TOML

# start_gateway NAME BINARY [CONFIG [RUST_LOG]]: starts it, opens a
# session; sets NAME_addr, NAME_pid and NAME_cookie.
start_gateway() {
  local name=$1 bin=$2 config=${3:-$work/gateway.toml} log=${4:-warn}
  RUST_LOG=$log "${pin_proxy[@]}" "$bin" --config "$config" > "$work/$name.out" 2> "$work/$name.err" &
  local pid=$!
  pids+=("$pid")
  for _ in $(seq 50); do grep -q 'embedgate ready' "$work/$name.out" && break; sleep 0.1; done
  local addr
  addr=$(sed -n 's/.*public=http:\/\/\([^ ]*\).*/\1/p' "$work/$name.out")
  local cookie
  cookie=$(open_session "$addr")
  # Benchmark only what works: both gateway routes must answer 200 first.
  for url in "http://$addr/" "http://$addr/embed-apps/$app/"; do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: $cookie" "$url")
    [ "$code" = 200 ] || { echo "$name: $url answered $code, not 200"; cat "$work/$name.err"; exit 1; }
  done
  printf -v "${name}_addr" '%s' "$addr"
  printf -v "${name}_pid" '%s' "$pid"
  printf -v "${name}_cookie" '%s' "$cookie"
}

start_gateway gw target/release/embedgate
# The same binary logging at RUST_LOG=info (to a file, as in production),
# with its access log on and off: the difference is what the access log
# costs; against the rows above, what info-level logging costs in all.
{ cat "$work/gateway.toml"; printf '[log]\naccess = false\n'; } > "$work/gateway-noaccess.toml"
start_gateway lgw target/release/embedgate "$work/gateway.toml" info
start_gateway ngw target/release/embedgate "$work/gateway-noaccess.toml" info
if [ -n "${BASELINE:-}" ]; then
  start_gateway base "$BASELINE"
fi

redis_port="" redis_pid=""
if [ "$store" = redis ]; then
  for _ in $(seq 20); do   # a free port below Linux's ephemeral ones; another if taken
    p=$((10000 + RANDOM % 20000))
    "${pin_load[@]}" redis-server --port "$p" --bind 127.0.0.1 --save "" --appendonly no > "$work/redis.out" 2>&1 &
    redis_pid=$!
    for _ in $(seq 100); do
      grep -q 'Ready to accept' "$work/redis.out" 2>/dev/null && { redis_port=$p; break; }
      kill -0 "$redis_pid" 2>/dev/null || break
      sleep 0.1
    done
    [ -n "$redis_port" ] && break
    kill "$redis_pid" 2>/dev/null || true
  done
  pids+=("$redis_pid")
  [ -n "$redis_port" ] || { echo "redis-server did not start:"; cat "$work/redis.out"; exit 1; }
  rcli() { redis-cli -p "$redis_port" "$@"; }
  openssl genpkey -algorithm ed25519 -out "$work/assertion-key.pem" 2>/dev/null
  { cat "$work/gateway.toml"
    printf '[assertion]\nkey = "assertion-key.pem"\n[store]\nkind = "redis"\nurl = "redis://127.0.0.1:%s/0"\n' "$redis_port"
  } > "$work/gateway-redis.toml"
  start_gateway rgw target/release/embedgate "$work/gateway-redis.toml"
fi

nginx_port="" nginx_pid=""
if command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; then
  nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
  nginx_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  mkdir -p "$work/nginx/logs"
  cat > "$work/nginx/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
master_process off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/logs/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  upstream app { server $upstream; keepalive 64; }
  server {
    listen 127.0.0.1:$nginx_port;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
NGINX
  "${pin_proxy[@]}" "$nginx_bin" -p "$work/nginx" -c "$work/nginx/nginx.conf" &
  nginx_pid=$!
  pids+=("$nginx_pid")
  for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$nginx_port/" && break; sleep 0.1; done
fi

ticks=$(getconf CLK_TCK)
# cpu_ticks PID: user + system clock ticks the process has used.
cpu_ticks() { [ -n "$1" ] && awk '{print $14 + $15}' "/proc/$1/stat" || echo 0; }
# measure LABEL PID wrk-args...: one wrk run; appends "rps cpu_us requests"
# to $work/r_LABEL.
measure() {
  local label=$1 pid=$2; shift 2
  local before after out requests rps
  before=$(cpu_ticks "$pid")
  out=$("${pin_load[@]}" wrk -t1 -c"$connections" -d"${duration}s" "$@")
  after=$(cpu_ticks "$pid")
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  echo "$rps $(echo "($after - $before) * 1000000 / $ticks / $requests" | bc -l) $requests" >> "$work/r_$label"
}

for round in $(seq "$rounds"); do
  echo "round $round of $rounds" >&2
  measure direct "" "http://$upstream/"
  [ -n "$nginx_port" ] && measure nginx "$nginx_pid" "http://127.0.0.1:$nginx_port/"
  measure passthrough "$gw_pid" "http://$gw_addr/"
  measure embed "$gw_pid" -H "Cookie: $gw_cookie" "http://$gw_addr/embed-apps/$app/"
  measure log_passthrough "$lgw_pid" "http://$lgw_addr/"
  measure log_embed "$lgw_pid" -H "Cookie: $lgw_cookie" "http://$lgw_addr/embed-apps/$app/"
  measure nolog_passthrough "$ngw_pid" "http://$ngw_addr/"
  measure nolog_embed "$ngw_pid" -H "Cookie: $ngw_cookie" "http://$ngw_addr/embed-apps/$app/"
  if [ -n "${BASELINE:-}" ]; then
    measure base_passthrough "$base_pid" "http://$base_addr/"
    measure base_embed "$base_pid" -H "Cookie: $base_cookie" "http://$base_addr/embed-apps/$app/"
  fi
  if [ -n "$redis_port" ]; then
    rcli CONFIG RESETSTAT > /dev/null
    redis_before=$(cpu_ticks "$redis_pid")
    measure redis_embed "$rgw_pid" -H "Cookie: $rgw_cookie" "http://$rgw_addr/embed-apps/$app/"
    redis_after=$(cpu_ticks "$redis_pid")
    calls=$(rcli INFO commandstats | tr -d '\r' \
      | awk -F'[:,=]' '/^cmdstat_/ && !/^cmdstat_(config|info)/ {n += $3} END {print n + 0}')
    requests=$(tail -n1 "$work/r_redis_embed" | awk '{print $3}')
    echo "$(echo "$calls / $requests" | bc -l) $(echo "($redis_after - $redis_before) * 1000000 / $ticks / $requests" | bc -l) $calls $requests" >> "$work/redis_calls"
  fi
done

# median FILE COLUMN
median() { sort -g -k"$2" "$1" | awk -v c="$2" '{v[NR]=$c} END {print v[int((NR+1)/2)]}'; }
direct=$(median "$work/r_direct" 1)
printf '%-30s %12s %8s %12s\n' route 'requests/s' 'ratio' 'CPU us/req'
printf '%-30s %12.0f %8s %12s\n' 'direct (reference)' "$direct" 1.00 -
row() {
  [ -f "$work/r_$2" ] || return 0
  local rps cpu
  rps=$(median "$work/r_$2" 1)
  cpu=$(median "$work/r_$2" 2)
  printf '%-30s %12.0f %8.2f %12.1f\n' "$1" "$rps" "$(echo "$rps / $direct" | bc -l)" "$cpu"
}
row 'nginx proxy_pass' nginx
row 'gateway passthrough' passthrough
row 'gateway embed (session)' embed
row 'passthrough, info, access off' nolog_passthrough
row 'passthrough, info, access on' log_passthrough
row 'embed, info, access off' nolog_embed
row 'embed, info, access on' log_embed
row 'gateway embed (redis store)' redis_embed
row 'baseline passthrough' base_passthrough
row 'baseline embed (session)' base_embed
if [ -f "$work/redis_calls" ]; then
  # The median round by commands per request, and the median redis-server CPU.
  read -r per_req _ calls requests < <(sort -g -k1 "$work/redis_calls" | awk '{l[NR]=$0} END {print l[int((NR+1)/2)]}')
  printf 'Redis commands per proxied request: %.4f (%s in %s requests); redis-server CPU us/req: %.2f\n' \
    "$per_req" "$calls" "$requests" "$(median "$work/redis_calls" 2)"
fi
