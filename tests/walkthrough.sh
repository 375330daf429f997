#!/usr/bin/env bash
# Follows README.md's walk-through ("Try the real flow on this machine") verbatim: extracts
# the ```sh blocks between <!-- walkthrough:begin --> and <!-- walkthrough:end -->, runs them
# with `bash -euo pipefail` in a fresh temporary directory with the freshly built debug
# `siirto` first on the PATH, and then checks from outside that the migration settled and
# that PowerDNS serves every domain at the target's address.
#
# The last block (stopping the background processes) runs after the checks, because they ask
# the walk-through's PowerDNS. What the checks rely on, besides the blocks succeeding: the
# walk-through writes its config to sim/siirto.toml, its ports in DNS_PORT and API_PORT
# (taken from the environment when set, so this script gives it free ones), and the
# background processes' ids to sim.pid and pdns.pid. The blocks run in their own process
# group, which is killed on exit whatever happened.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
started=$SECONDS

fail() {
  echo "tests/walkthrough.sh: $*" >&2
  exit 1
}

missing=()
[ -x /usr/sbin/pdns_server ] || missing+=("pdns_server (Debian package pdns-server)")
[ -f /usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql ] \
  || missing+=("the gsqlite3 schema (Debian package pdns-backend-sqlite3)")
command -v dig > /dev/null || missing+=("dig (Debian package bind9-dnsutils)")
command -v sqlite3 > /dev/null || missing+=("sqlite3 (Debian package sqlite3)")
command -v python3 > /dev/null || missing+=("python3 (Debian package python3)")
command -v curl > /dev/null || missing+=("curl (Debian package curl)")
[ ${#missing[@]} -eq 0 ] || fail "missing: $(IFS=,; echo "${missing[*]}" | sed 's/,/, /g')"

# The blocks, in order, one file each.
blocks=$(mktemp -d -t siirto-walkthrough-blocks.XXXXXX)
awk -v dir="$blocks" '
  /<!-- walkthrough:begin -->/ { inside = 1; next }
  /<!-- walkthrough:end -->/ { inside = 0; next }
  inside && /^```sh$/ { n++; file = sprintf("%s/%02d.sh", dir, n); code = 1; next }
  code && /^```$/ { code = 0; next }
  code { print > file }
' "$repo/README.md"
shopt -s nullglob
block_files=("$blocks"/*.sh)
[ ${#block_files[@]} -ge 2 ] || fail "README.md has fewer than two \`\`\`sh blocks between the walkthrough markers"
last=${block_files[-1]}
cat "${block_files[@]:0:${#block_files[@]}-1}" > "$blocks/run.sh"

echo "tests/walkthrough.sh: building siirto"
(cd "$repo" && cargo build --locked -q)
target_dir=${CARGO_TARGET_DIR:-$repo/target}
case $target_dir in /*) ;; *) target_dir=$repo/$target_dir ;; esac
[ -x "$target_dir/debug/siirto" ] || fail "no $target_dir/debug/siirto after cargo build"
export PATH="$target_dir/debug:$PATH"

work=$(mktemp -d -t siirto-walkthrough.XXXXXX)
group=
cleanup() {
  local status=$?
  # The processes the blocks left in the background, then anything else in their group.
  for pidfile in "$work/sim.pid" "$work/pdns.pid"; do
    [ -f "$pidfile" ] && kill -INT "$(cat "$pidfile")" 2> /dev/null || true
  done
  [ -n "$group" ] && kill -- "-$group" 2> /dev/null || true
  if [ "$status" -ne 0 ]; then
    for log in "$work/sim.log" "$work/pdns/pdns.log"; do
      [ -f "$log" ] && { echo "--- $log (last 40 lines)" >&2; tail -n 40 "$log" >&2; }
    done
    echo "tests/walkthrough.sh: FAILED after $((SECONDS - started))s; left $work for a look" >&2
  else
    rm -rf "$work"
  fi
  rm -rf "$blocks"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Two free loopback ports for PowerDNS, so a run does not depend on 5300 and 8081 being free.
read -r DNS_PORT API_PORT < <(python3 -c '
import socket
ports = []
while len(ports) < 2:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    port = udp.getsockname()[1]
    tcp = socket.socket()
    try:
        tcp.bind(("127.0.0.1", port))
        ports.append(port)
    except OSError:
        pass
    tcp.close()
    udp.close()
print(*ports)')
export DNS_PORT API_PORT

run_blocks() {
  # setsid: the blocks and whatever they start in the background get their own process group,
  # which cleanup kills.
  # This shell runs without job control, so the background job is not a group leader and
  # setsid makes the new session in place: its id, the group's, is the job's pid.
  (cd "$work" && exec setsid bash -euo pipefail "$1" < /dev/null) &
  group=$!
  wait "$group"
}

echo "tests/walkthrough.sh: running README.md's walk-through in $work (DNS $DNS_PORT, API $API_PORT)"
run_blocks "$blocks/run.sh" || fail "the walk-through failed (above)"

# From outside: the migration settled, every account arrived, and PowerDNS answers the
# target's address for every domain.
export SIIRTO_CONFIG=$work/sim/siirto.toml
status=$(siirto status old-to-new --json) || fail "siirto status old-to-new --json failed"
target_ip=$(sed -n '/^\[hosts\.new\]/,/^\[/s/^ip = "\(.*\)"/\1/p' "$SIIRTO_CONFIG")
[ -n "$target_ip" ] || fail "no [hosts.new] ip in $SIIRTO_CONFIG"
python3 - "$status" "$target_ip" "$DNS_PORT" << 'PY' || fail "the checks above failed"
import json, subprocess, sys

status, target_ip, dns_port = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
problems = []
if status.get("state") != "settled":
    problems.append(f"the migration is {status.get('state')!r}, not 'settled'")
accounts = status.get("accounts", [])
if len(accounts) != 5:
    problems.append(f"{len(accounts)} accounts in the status, the walk-through has 5")
domains = [d["domain"] for a in accounts for d in a.get("domains", [])]
if not domains:
    problems.append("no domains in the status")
for account in accounts:
    if account.get("state") != "done":
        problems.append(f"account {account.get('user')} is {account.get('state')!r}, not 'done'")
for domain in domains:
    answer = subprocess.run(
        ["dig", "@127.0.0.1", "-p", dns_port, domain, "A", "+short", "+tries=2", "+time=2"],
        capture_output=True, text=True,
    ).stdout.split()
    if answer != [target_ip]:
        problems.append(f"{domain} A is {answer}, not [{target_ip!r}]")
for problem in problems:
    print(f"tests/walkthrough.sh: {problem}", file=sys.stderr)
if problems:
    print(json.dumps(status, indent=2), file=sys.stderr)
    sys.exit(1)
print(f"tests/walkthrough.sh: settled; {len(domains)} domains answer {target_ip}")
PY

run_blocks "$last" || fail "the walk-through's last block (stopping what it started) failed"
echo "tests/walkthrough.sh: passed in $((SECONDS - started))s"
