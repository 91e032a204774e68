#!/usr/bin/env bash
# Run the test suite, installing everything it needs first (fresh machine: Python 3.11 + pip).
# Needs root or sudo the first time: scripts/setup_browser.sh installs Debian's chromium, fonts-dejavu-core and npm
# with apt-get where they are missing. The suite builds the whole book once (tests/test_book.py; about 25 min in all
# on a 2-core machine). Its logs and screenshots go to pytest's temporary folder; in the checkout it leaves only
# pytest's .pytest_cache and, from the first book build, the git-ignored book/_extra/vendor/ (fetched with npm).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/setup.sh" dev,stats,book,cluster,procgen
# The book tests open the built pages in headless Chromium.
bash "$root/scripts/setup_browser.sh"
cd "$root"
python -m pytest -q "$@"
