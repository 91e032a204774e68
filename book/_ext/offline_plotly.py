"""Keep the book's plotly figures offline and light: plotly.js once for the whole site, and no CDN script.

plotly's ``notebook`` renderer (the one the build uses, ``PLOTLY_RENDERER=plotly_mimetype+notebook``) works
offline because it inlines plotly.js (≈4.8 MB) into the first figure's output — once in every chapter with a
figure, so the site carried one copy per chapter. This extension moves that inline copy into one file of the site,
``vendor/plotly/plotly-<hash>.min.js`` (its bytes exactly, named by their hash), and puts a
``<script src=…>`` in its place: the same code, at the same point of the page, loaded once and cached by the browser
for every other chapter. Nothing is downloaded at build or view time.

It also drops the MathJax ``<script src="https://cdnjs.cloudflare.com/…/tex-svg.min.js">`` that plotly writes before
each figure — only needed for LaTeX inside plotly figures, which the book does not use. Pages that contain math
load the book's own copy of MathJax (``mathjax_path`` in ``_config.yml``).
"""

import hashlib
import os
import re
import tempfile
from pathlib import Path

_PLOTLY_MATHJAX = re.compile(
    r'<script[^>]*src="https://cdnjs\.cloudflare\.com/ajax/libs/mathjax/[^"]*"[^>]*>\s*</script>')
#: The inline plotly.js bundle: a <script> whose text starts with plotly.js's licence header.
_PLOTLY_JS = re.compile(r"<script(?:\s+type=\"text/javascript\")?>(\s*/\*\*\s*\*\s*plotly\.js v[\d.]+.*?)</script>",
                        re.S)
FOLDER = "vendor/plotly"


def _shared_copy(outdir: str, code: str) -> str:
    """Write ``code`` once into the site as ``vendor/plotly/plotly-<hash>.min.js``; its path in the site."""
    data = code.encode("utf-8")
    name = f"{FOLDER}/plotly-{hashlib.sha256(data).hexdigest()[:16]}.min.js"
    target = Path(outdir, name)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".plotly-")
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a web server must be able to read it
        os.replace(tmp, target)  # pages written in parallel may race: each writes the same bytes whole
    return name


def _strip(app, pagename, templatename, context, doctree):
    body = context.get("body")
    if not body:
        return
    if "cdnjs.cloudflare.com/ajax/libs/mathjax" in body:
        body = _PLOTLY_MATHJAX.sub("", body)
    if "plotly.js v" in body:
        def shared(match):
            src = context["pathto"](_shared_copy(app.outdir, match.group(1)), 1)
            return f'<script src="{src}"></script>'

        body = _PLOTLY_JS.sub(shared, body)
    context["body"] = body


def setup(app):
    app.connect("html-page-context", _strip)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
