#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian machine with only Node 20: pnpm, the project's
# own Node 22 (a dev dependency), dependencies, tmux — and, with `test`, tmate,
# chromium, nginx (test/chaos/nginx.test.ts runs its own), and running PostgreSQL + Redis for the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=${1:-}

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "setup: installing ${missing[*]}"
  local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

apt_install tmux
command -v pnpm >/dev/null 2>&1 || { echo "setup: installing pnpm"; npm install -g pnpm@12.21.0 >/dev/null 2>&1; }
pnpm install --frozen-lockfile --reporter=silent
pnpm exec node -e 'const [a,b]=process.versions.node.split(".").map(Number); if (a<22||(a===22&&b<17)) { console.error("setup: Node >= 22.17 expected from the node-runtime dev dependency, got "+process.version); process.exit(1) }'

if [ "$want_test" = "test" ]; then
  apt_install tmate chromium nginx-light
  if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    echo "setup: starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
  fi
  if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    echo "setup: starting Redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
  fi
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && break; sleep 1; done
  pg_isready -h 127.0.0.1 -p 5432
  redis-cli -h 127.0.0.1 ping
fi
echo "setup: done (node $(pnpm exec node --version), pnpm $(pnpm --version), $(tmux -V))"
