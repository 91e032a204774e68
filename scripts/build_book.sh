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
# sets how many, default the usable cores up to 4), then read from there by the build.
# The build fails on any cell error (nb_execution_raise_on_error) and on any Sphinx warning (-W).
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
    command -v npm >/dev/null || { echo "build_book.sh: npm is needed to fetch the widget JavaScript" >&2; exit 1; }
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
# The chapters run several at a time into the execution cache first (BOOK_JOBS sets how many; 1 leaves it to the
# build, which runs them one after another); the build then reads them from the cache.
if [ "${BOOK_JOBS:-}" != "1" ]; then
    python "$root/scripts/execute_book.py" "$out/_build/.jupyter_cache"
fi
exec jupyter-book build "$root" -W --keep-going "$@"
