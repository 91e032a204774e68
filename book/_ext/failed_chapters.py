"""Build every page even when chapters failed to execute, without running the failed ones a second time.

``scripts/build_book.sh`` executes the chapters first (``scripts/execute_book.py``) and hands the build those that
failed in the environment variable ``PLASTICITY_BOOK_FAILED``, one a line: the chapter's path, a tab, its error.
This extension adds them to myst-nb's ``nb_execution_excludepatterns``: the build renders them from their source
(their code, no outputs) with a note at the top of the page, builds every other page from the execution cache, and
``build_book.sh`` then prints one line per failed chapter and exits non-zero. Without the variable it does nothing.
"""

import html
import os
from pathlib import Path

VARIABLE = "PLASTICITY_BOOK_FAILED"


def _failed() -> dict[Path, str]:
    """The failed chapters' resolved paths, each with its error line."""
    out = {}
    for line in os.environ.get(VARIABLE, "").splitlines():
        path, _, error = line.partition("\t")
        if path.strip():
            out[Path(path.strip()).resolve()] = error.strip()
    return out


def _exclude(app, config):
    failed = [p.as_posix() for p in _failed()]
    if failed:
        config.nb_execution_excludepatterns = [*config.nb_execution_excludepatterns, *failed]
        # an unexecuted notebook has no language_info: myst-nb warns once per code cell that it has no lexer
        config.suppress_warnings = [*config.suppress_warnings, "myst-nb.lexer"]


def _note(app, pagename, templatename, context, doctree):
    body = context.get("body")
    if not body:
        return
    source = Path(app.srcdir, pagename).resolve()
    for path, error in _failed().items():
        if source == path.with_suffix(""):
            note = ('<div class="admonition error"><p class="admonition-title">Not executed</p><p>'
                    "This chapter failed to execute in this build"
                    + (f" (at {html.escape(error)})" if error else "")
                    + ", so this page shows its code without outputs.</p></div>")
            context["body"] = note + body


def setup(app):
    app.connect("config-inited", _exclude, priority=400)  # before myst-nb reads its configuration
    app.connect("html-page-context", _note)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
