#!/usr/bin/env bash
# Keyward's whole test suite, from a fresh machine of this kind (Debian, Rust via rustup):
# installs what the tests need, then runs formatting, lints and every test.
# CI (.ci/run) calls exactly this script.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "toolchain"
cargo --version
rustc --version
rustup component list --installed 2>/dev/null | grep -E '^(rustfmt|clippy)' || true
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi

step "shared corpora"
if [ -d ../shared/corpus ]; then
  echo "using ../shared/corpus for conformance tests"
else
  echo "../shared/corpus not found: corpus conformance tests will report that they did not run"
fi

step "redis-server for the fleet-mode tests (Debian's package; each test starts its own on a loopback port and stops it)"
if ! command -v redis-server >/dev/null 2>&1 || ! command -v openssl >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  # openssl makes the throwaway CA of the TLS test.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server openssl >/dev/null
  # The tests start their own servers; the packaged service is not needed.
  $SUDO systemctl disable --now redis-server >/dev/null 2>&1 || true
fi
redis-server --version

step "chromium for the status page test (Debian's package; headless, crates/keyward/tests/it/status_page.rs)"
if ! command -v chromium >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
chromium --version

step "Python SDKs for the end-to-end tests (tests/sdk/requirements.txt)"
VENV="${KEYWARD_VENV:-$PWD/.venv-sdk}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/sdk/requirements.txt
"$VENV/bin/python" -c 'import anthropic, openai; print("anthropic", anthropic.__version__, "openai", openai.__version__)'
export KEYWARD_PYTHON="$VENV/bin/python"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked
