"""Keep the book's pages free of CDN scripts: drop the MathJax <script> that plotly adds to every figure.

plotly's ``notebook`` renderer (the one the build uses, ``PLOTLY_RENDERER=plotly_mimetype+notebook``) embeds
plotly.js in the page, which works offline, but it also writes
``<script src="https://cdnjs.cloudflare.com/ajax/libs/mathjax/…/tex-svg.min.js">`` before each figure — only
needed for LaTeX inside plotly figures, which the book does not use. Pages that contain math load the book's own
copy of MathJax (``mathjax_path`` in ``_config.yml``). This extension removes plotly's tag from the page body.
"""

import re

_PLOTLY_MATHJAX = re.compile(
    r'<script[^>]*src="https://cdnjs\.cloudflare\.com/ajax/libs/mathjax/[^"]*"[^>]*>\s*</script>')


def _strip(app, pagename, templatename, context, doctree):
    body = context.get("body")
    if body and "cdnjs.cloudflare.com/ajax/libs/mathjax" in body:
        context["body"] = _PLOTLY_MATHJAX.sub("", body)


def setup(app):
    app.connect("html-page-context", _strip)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
