#!/usr/bin/env bash
# Run the test suite, installing everything it needs first (fresh machine: Python 3.11 + pip).
# Needs root or sudo the first time: scripts/setup_browser.sh installs Debian's chromium, fonts-dejavu-core and npm
# with apt-get where they are missing. The suite builds the whole book once (tests/test_book.py). Run without
# arguments, the book's tests and all the others run side by side, as two pytest sessions: the book build spends
# much of its time in single-threaded work (Sphinx, Chromium) and the other tests fill the second core. The book's
# progress lines print as they come; the other session's report follows when both are done. With arguments, one
# pytest session runs exactly what they name. Logs and screenshots go to pytest's temporary folders; in the checkout
# the suite leaves only pytest's .pytest_cache and, from the first book build, the git-ignored book/_extra/vendor/
# (fetched with npm).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/setup.sh" dev,stats,book,cluster,procgen,atari
# The book tests open the built pages in headless Chromium.
bash "$root/scripts/setup_browser.sh"
cd "$root"
if [ "$#" -gt 0 ]; then
    exec python -m pytest -q "$@"
fi
others_log="$(mktemp)"
others_tmp="$(mktemp -d)"
book_tmp="$(mktemp -d)"
python -m pytest -q --basetemp="$others_tmp" --ignore=tests/test_book.py >"$others_log" 2>&1 &
others=$!
book_status=0
# The book's chapters run their experiments on one thread; libraries that size a thread pool to the machine would
# spin against the other session (scripts/execute_book.py sets the same for the build's chapters).
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1} \
    python -m pytest -q --basetemp="$book_tmp" tests/test_book.py || book_status=$?
others_status=0
wait "$others" || others_status=$?
echo
echo "== every test but the book's (tests/test_book.py ran above) =="
cat "$others_log"
rm -f "$others_log"
if [ "$book_status" -ne 0 ] || [ "$others_status" -ne 0 ]; then
    echo "tests failed: the book's session exited with $book_status, the others' with $others_status"
    exit 1
fi
