#!/usr/bin/env bash
# Installs what the tests need (Debian packages, as root; schemathesis from PyPI into
# target/schemathesis) and runs every test:
# cargo fmt --check, cargo clippy -D warnings, cargo test (unit tests and the one
# integration binary, which starts real pdns_server, sshd, an aiosmtpd SMTP server and uses
# PostgreSQL on 127.0.0.1:5432, starting or installing it if it is absent), then
# tests/walkthrough.sh (README.md's walk-through, with pdns_server, sqlite3 and dig).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
[ -x /usr/sbin/pdns_server ] || need+=(pdns-server)
[ -f /usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql ] || need+=(pdns-backend-sqlite3)
/usr/bin/python3 -c 'import aiosmtpd' 2>/dev/null || need+=(python3-aiosmtpd)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
[ -x /usr/sbin/named ] || need+=(bind9)
command -v ssh-keygen >/dev/null || need+=(openssh-client)
command -v rsync >/dev/null || need+=(rsync)
command -v dig >/dev/null || need+=(bind9-dnsutils)
command -v sqlite3 >/dev/null || need+=(sqlite3)
command -v curl >/dev/null || need+=(curl)
command -v pg_ctlcluster >/dev/null || command -v psql >/dev/null || need+=(postgresql)
# The status page's browser test (headless Chromium) and the API's contract test (schemathesis,
# from PyPI, in a virtualenv under target/).
[ -x /usr/bin/chromium ] || need+=(chromium)
/usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)

if [ ${#need[@]} -gt 0 ]; then
  echo "tests/run.sh: installing ${need[*]}"
  if [ "$(id -u)" != 0 ]; then
    echo "tests/run.sh: need root to apt-get install ${need[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Debian's maintainer scripts try to start the services; there is no init system here and
  # the tests start their own instances, so tell invoke-rc.d not to.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi
mkdir -p /run/sshd

if [ ! -x target/schemathesis/bin/schemathesis ]; then
  echo "tests/run.sh: installing schemathesis into target/schemathesis"
  rm -rf target/schemathesis
  /usr/bin/python3 -m venv target/schemathesis
  target/schemathesis/bin/pip install -q schemathesis
fi

# PostgreSQL on 127.0.0.1:5432: use the running one, or start (or create) a cluster.
pg_up() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }
if [ -z "${SIIRTO_TEST_PG_URL:-}" ] && ! pg_up; then
  echo "tests/run.sh: no PostgreSQL on 127.0.0.1:5432; starting one"
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    ver=$(ls /usr/lib/postgresql | sort -n | tail -1)
    pg_createcluster "$ver" main >/dev/null
  fi
  ver=$(ls /etc/postgresql | sort -n | tail -1)
  conf=/etc/postgresql/$ver/main
  grep -q "^listen_addresses" "$conf/postgresql.conf" || echo "listen_addresses = '127.0.0.1'" >> "$conf/postgresql.conf"
  if ! grep -q "siirto-tests" "$conf/pg_hba.conf"; then
    sed -i '1i # siirto-tests: trust on loopback\nhost all all 127.0.0.1/32 trust\nlocal all all trust' "$conf/pg_hba.conf"
  fi
  pg_ctlcluster --skip-systemctl-redirect "$ver" main start
  for _ in $(seq 1 60); do pg_up && break; sleep 0.5; done
  pg_up || { echo "tests/run.sh: PostgreSQL did not come up" >&2; exit 1; }
fi

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked --all-targets
# README.md's walk-through, verbatim, on simulated hosts and a real pdns_server.
tests/walkthrough.sh
