#!/usr/bin/env bash
# Throughput of the gateway relative to the same upstream reached directly,
# measured in one run on this machine (it is shared and noisy: read the
# ratios, not the absolute numbers).
#
#   bash bench/load.sh            # needs wrk (apt-get install wrk)
#
# Runs of wrk against: the upstream directly; nginx's proxy_pass with an
# upstream keep-alive pool (when nginx is installed: the field's reference
# reverse proxy); the gateway's [passthrough]; the gateway's embed route
# with a live session (identity headers, cached assertion, response
# rewriting). Prints requests/s and the ratio to the direct run for each.
# Everything listens on 127.0.0.1 and is stopped by PID at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)"; exit 1; }

duration=${DURATION:-5}
connections=${CONNECTIONS:-32}
cargo build --release --quiet --bin embedgate --example bench_upstream

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

target/release/examples/bench_upstream 127.0.0.1:0 > "$work/upstream.out" &
pids+=($!)
for _ in $(seq 50); do grep -q listening "$work/upstream.out" && break; sleep 0.1; done
upstream=$(awk '/listening/ {print $2}' "$work/upstream.out")

token=bench-token-$RANDOM$RANDOM
hash=$(printf '%s' "$token" | sha256sum | cut -d' ' -f1)
app=8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc
cat > "$work/gateway.toml" <<TOML
[server]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1"
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
RUST_LOG=warn target/release/embedgate --config "$work/gateway.toml" > "$work/gateway.out" 2> "$work/gateway.err" &
pids+=($!)
for _ in $(seq 50); do grep -q 'embedgate ready' "$work/gateway.out" && break; sleep 0.1; done
gateway=$(sed -n 's/.*public=http:\/\/\([^ ]*\).*/\1/p' "$work/gateway.out")

pat=$(curl -s -X POST "http://$gateway/api/ext/users/personal-access-token" \
  -H "Authorization: Basic $token" -H 'Content-Type: application/json' \
  -d "{\"email\": \"bench@example.com\", \"appId\": \"$app\"}" | sed 's/.*"personalAccessToken":"\([^"]*\)".*/\1/')
cookie=$(curl -s -o /dev/null -D - "http://$gateway/embed-apps/$app?personal-access-token=$pat" \
  | sed -n 's/^set-cookie: \([^;]*\).*/\1/ip')

# Benchmark only what works: both gateway routes must answer 200 first.
for url in "http://$gateway/" "http://$gateway/embed-apps/$app/"; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: $cookie" "$url")
  [ "$code" = 200 ] || { echo "$url answered $code, not 200"; cat "$work/gateway.err"; exit 1; }
done

nginx_port=""
if command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; then
  nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
  nginx_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  mkdir -p "$work/nginx/logs"
  cat > "$work/nginx/nginx.conf" <<NGINX
worker_processes auto;
daemon off;
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
  "$nginx_bin" -p "$work/nginx" -c "$work/nginx/nginx.conf" &
  pids+=($!)
  for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$nginx_port/" && break; sleep 0.1; done
fi

rps() { wrk -t1 -c"$connections" -d"${duration}s" "$@" | awk '/Requests\/sec/ {print $2}'; }
direct=$(rps "http://$upstream/")
[ -n "$nginx_port" ] && nginx=$(rps "http://127.0.0.1:$nginx_port/")
passthrough=$(rps "http://$gateway/")
embed=$(rps -H "Cookie: $cookie" "http://$gateway/embed-apps/$app/")

printf '%-28s %12s %8s\n' route 'requests/s' 'ratio'
printf '%-28s %12s %8s\n' 'direct (reference)' "$direct" 1.00
[ -n "$nginx_port" ] && printf '%-28s %12s %8.2f\n' 'nginx proxy_pass' "$nginx" "$(echo "$nginx / $direct" | bc -l)"
printf '%-28s %12s %8.2f\n' 'gateway passthrough' "$passthrough" "$(echo "$passthrough / $direct" | bc -l)"
printf '%-28s %12s %8.2f\n' 'gateway embed (session)' "$embed" "$(echo "$embed / $direct" | bc -l)"
