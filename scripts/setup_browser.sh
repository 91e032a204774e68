#!/usr/bin/env bash
# Install what the book needs beyond Python, from Debian's packages: `chromium` (headless, for the page tests in
# tests/test_book.py) and `npm` (scripts/build_book.sh fetches the widget JavaScript and MathJax with `npm pack`).
# Idempotent: installs only what is missing from PATH. Needs root (or sudo).
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || missing+=(chromium fonts-dejavu-core)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi
sudo=""
if [ "$(id -u)" != "0" ]; then
    command -v sudo >/dev/null 2>&1 || { echo "setup_browser.sh: run as root or install sudo" >&2; exit 1; }
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
for tool in chromium npm; do
    command -v "$tool" >/dev/null 2>&1 || { echo "setup_browser.sh: $tool did not install" >&2; exit 1; }
done
echo "setup_browser.sh: installed ${missing[*]}"
