#!/usr/bin/env bash
# Run the test suite, installing everything it needs first (fresh machine: Python 3.11 + pip).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/setup.sh" dev,stats,book,cluster,procgen
# The book tests open the built pages in headless Chromium.
bash "$root/scripts/setup_browser.sh"
cd "$root"
python -m pytest -q "$@"
