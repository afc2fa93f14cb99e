#!/usr/bin/env bash
# What the test suite needs beyond the virtual environment, from the machine's own package
# manager: Debian's Chromium for the browser tests (Playwright drives it; its own browser
# download is not used). `make test` runs this first, so the README's test command passes on a
# fresh machine; CI runs it through `make test` as well. Idempotent: nothing happens when
# Chromium is already there.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "the browser tests need Chromium at /usr/bin/chromium (or on PATH); install it with your" \
       "package manager" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "the browser tests need Chromium: run 'apt-get install chromium' as root" >&2
    exit 1
  fi
fi
echo "installing Debian's chromium for the browser tests (once)"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
command -v chromium >/dev/null
