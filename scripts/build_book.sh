#!/usr/bin/env bash
# Build the book (Jupyter Book 1.x) into _build/html, executing every chapter (with a cache in _build/.jupyter_cache,
# cleared whenever the package's source changes).
#
#   bash scripts/build_book.sh                   # set-up + fetch the offline JavaScript + build
#   bash scripts/build_book.sh --path-output D   # extra arguments go to `jupyter-book build`
#
# Set-up: sources scripts/setup.sh with the dev, stats and book extras (creates .venv on a fresh machine), unless
# BOOK_SKIP_SETUP=1 (then the current Python environment must already have the book extra, e.g. in tests).
# Offline JavaScript: the ipywidgets HTML manager, require.js and MathJax are fetched with `npm pack` into
# book/_extra/vendor/ (git-ignored) if missing, and copied into the site's root (html_extra_path in _config.yml):
# the built pages load them from there, never from a CDN.
# Chapters: executed several at a time into the build's execution cache first (scripts/execute_book.py; BOOK_JOBS
# sets how many, default the usable cores up to 4; one line per chapter as it starts and finishes), then read from
# there by the build.
# The build fails (non-zero exit) on any cell error and on any Sphinx warning (-W), but builds every page it can
# first (--keep-going); each failed chapter is one line: its cell and the error's first line.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ "${BOOK_SKIP_SETUP:-0}" != "1" ]; then
    # shellcheck disable=SC1091
    source "$root/scripts/setup.sh" dev,stats,book
fi
cd "$root"

# Pinned versions of the vendored JavaScript (html-manager 1.x is the embedder of ipywidgets 8; it also renders the
# ipywidgets 7 state that Colab produces).
HTML_MANAGER_VERSION="1.0.15"
REQUIREJS_VERSION="2.3.8"
MATHJAX_VERSION="3.2.2"
vendor="$root/book/_extra/vendor"
stamp="$vendor/.versions"
want="html-manager@$HTML_MANAGER_VERSION requirejs@$REQUIREJS_VERSION mathjax@$MATHJAX_VERSION"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    if ! command -v npm >/dev/null; then
        echo "build_book.sh: npm is needed (once) to fetch the widget JavaScript, require.js and MathJax into" \
             "book/_extra/vendor/: apt-get install npm, or bash scripts/setup_browser.sh (as root)" >&2
        exit 1
    fi
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    (cd "$tmp" && npm pack --silent "@jupyter-widgets/html-manager@$HTML_MANAGER_VERSION" \
        "requirejs@$REQUIREJS_VERSION" "mathjax@$MATHJAX_VERSION" >/dev/null)
    rm -rf "$vendor" && mkdir -p "$vendor/html-manager" "$vendor/mathjax"
    mkdir -p "$tmp/hm" "$tmp/rq" "$tmp/mj"
    tar xzf "$tmp/jupyter-widgets-html-manager-$HTML_MANAGER_VERSION.tgz" -C "$tmp/hm"
    tar xzf "$tmp/requirejs-$REQUIREJS_VERSION.tgz" -C "$tmp/rq"
    tar xzf "$tmp/mathjax-$MATHJAX_VERSION.tgz" -C "$tmp/mj"
    # embed-amd.js and the fonts it references (Font Awesome); not the source maps or the non-AMD bundles.
    find "$tmp/hm/package/dist" -maxdepth 1 -type f \
        \( -name 'embed-amd.js' -o -name '*.woff' -o -name '*.woff2' -o -name '*.ttf' -o -name '*.eot' \
           -o -name '*.svg' \) -exec cp {} "$vendor/html-manager/" \;
    cp "$tmp/rq/package/require.js" "$vendor/require.js"
    # MathJax: the TeX→CommonHTML bundle (mathjax_path) and what it loads on demand; not the other bundles.
    cp -r "$tmp/mj/package/es5/." "$vendor/mathjax/"
    find "$vendor/mathjax" -maxdepth 1 -name '*.js' ! -name 'tex-chtml.js' -delete
    rm -rf "$vendor/mathjax/output/svg" "$vendor/mathjax/output/svg.js"
    cp "$tmp/hm/package/LICENSE"* "$vendor/html-manager/" 2>/dev/null || true
    cp "$tmp/mj/package/LICENSE" "$vendor/mathjax/" 2>/dev/null || true
    echo "$want" > "$stamp"
fi

# The execution cache knows only the chapters' code cells: when the package (its Python or C++) changes, run every
# chapter again.
out="$root"
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[$i]}" in
        --path-output) out="${args[$((i + 1))]:-$root}" ;;
        --path-output=*) out="${args[$i]#--path-output=}" ;;
    esac
done
package_hash="$(find "$root/plasticity_lab" \( -name '*.py' -o -name '*.cpp' \) -print0 | sort -z | xargs -0 cat | sha256sum | cut -c1-16)"
hash_file="$out/_build/.plasticity-lab-source"
if [ -d "$out/_build/.jupyter_cache" ] && [ "$(cat "$hash_file" 2>/dev/null)" != "$package_hash" ]; then
    echo "build_book.sh: plasticity_lab changed since the last build; clearing the execution cache"
    rm -rf "$out/_build/.jupyter_cache" "$out/_build/.doctrees"  # .doctrees: else Sphinx re-reads nothing
fi
mkdir -p "$out/_build" && echo "$package_hash" > "$hash_file"

export PLOTLY_RENDERER="plotly_mimetype+notebook"  # else plotly figures are silently dropped from the pages
# The chapters run several at a time into the execution cache first, one line each as it starts and finishes
# (BOOK_JOBS sets how many; 1 leaves them to the build, which runs them one after another); the build then reads them
# from the cache. A chapter that fails there is one line (its cell and error); the build makes its page from the
# source without running it again (book/_ext/failed_chapters.py) and builds every other page.
failed_list="$out/_build/.failed-chapters"
rm -f "$failed_list"
export PLASTICITY_BOOK_FAILED=""  # the chapters the build must not run again (book/_ext/failed_chapters.py)
if [ "${BOOK_JOBS:-}" != "1" ]; then
    executed=0
    python "$root/scripts/execute_book.py" "$out/_build/.jupyter_cache" --failed-list "$failed_list" || executed=$?
    if [ "$executed" != 0 ] && [ ! -s "$failed_list" ]; then
        exit "$executed"  # not a chapter's failure (e.g. a bad BOOK_JOBS): its message is above
    fi
    PLASTICITY_BOOK_FAILED="$(cat "$failed_list" 2>/dev/null || true)"
    export PLASTICITY_BOOK_FAILED
fi
status=0
jupyter-book build "$root" -W --keep-going "$@" || status=$?
# One line per chapter whose execution failed (here or in the build); the build then fails even if Sphinx did not.
if ! python "$root/scripts/execute_book.py" "$out/_build/.jupyter_cache" --report; then
    echo "build_book.sh: chapters failed (above); every other page is built in $out/_build/html" >&2
    [ "$status" != 0 ] || status=1
fi
echo "build_book.sh: $([ "$status" = 0 ] && echo "built" || echo "FAILED (exit $status)") in $((SECONDS / 60)) min $((SECONDS % 60)) s"
exit "$status"
