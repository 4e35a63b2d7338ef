#!/usr/bin/env bash
# Runs Netting's whole test suite. Installs what the tests need when it can (Debian packages,
# cargo-nextest from crates.io) and says what is missing when it cannot.
#
# Environment:
#   NETTING_REQUIRE_TOOLS=1   a test that would skip for a missing tool or privilege fails
#                             instead (CI sets it).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*" >&2; }

need_debian_packages() {
  local missing=()
  command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
  # The chaos lab and the sidecar's namespace tests: namespaces, veths, iptables (nft and
  # legacy back ends), and pgrep to check nothing is left running.
  command -v ip >/dev/null 2>&1 || missing+=(iproute2)
  command -v iptables-legacy >/dev/null 2>&1 || missing+=(iptables)
  command -v pgrep >/dev/null 2>&1 || missing+=(procps)
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing Debian packages: ${missing[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    say "missing tools (Debian packages: ${missing[*]}); tests that need them will skip"
    say "install them with: sudo apt-get install ${missing[*]}"
  fi
}

need_nextest() {
  if ! cargo nextest --version >/dev/null 2>&1; then
    say "installing cargo-nextest from crates.io"
    cargo install --locked cargo-nextest
  fi
}

need_debian_packages
need_nextest

say "building the workspace"
cargo build --workspace --all-targets --locked
say "running the tests"
cargo nextest run --workspace --locked --no-fail-fast "$@"
