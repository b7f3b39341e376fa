"""The evaluation report as one self-contained document, for a UI that shows a single file (the Kubeflow
Markdown and HTML viewers, where ``![..](file.png)`` beside the report does not resolve).

* :func:`inline_images` puts every PNG figure the Markdown links into the text as a ``data:`` URI (base64).
* :func:`render_html` turns that Markdown into one HTML page with Python-Markdown (tables), raw HTML in
  the Markdown disabled: whatever text the report quotes is shown as text, never run as markup.
"""

from __future__ import annotations

import base64
import html
import os
import re
from pathlib import Path

IMAGE = re.compile(r"!\[(?P<alt>[^\]]*)\]\((?P<link>[^)\s]+)\)")
"""A Markdown image, ``![alt](link)`` (the form :mod:`ferd.evaluation.report` writes)."""
STYLE = ("body{font-family:system-ui,sans-serif;max-width:72rem;margin:1rem auto;padding:0 1rem;color:#222}"
         "table{border-collapse:collapse;margin:.5rem 0;font-size:.85rem}"
         "th,td{border:1px solid #ccc;padding:.2rem .45rem}th{background:#f3f3f3}"
         "img{max-width:100%;height:auto}code{background:#f3f3f3;padding:0 .2rem}")


def inline_images(markdown: str, base: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> str:
    """``markdown`` with each ``![alt](link.png)`` whose link is a relative path replaced by the PNG's bytes as a
    ``data:image/png;base64,…`` URI. Links resolve against ``base`` (the report's folder) and must stay inside
    ``root`` (default ``base``: the artifact the report belongs to); a link that does not name a PNG file
    there is a :class:`ValueError` naming it. Links with a scheme (``data:``, ``https:``) are kept."""
    base = Path(base)
    top = Path(root if root is not None else base).resolve()

    def one(m: re.Match[str]) -> str:
        link = m["link"]
        if ":" in link or link.startswith("/"):
            return m[0]
        path = (base / link).resolve()
        if top not in (path, *path.parents) or path.suffix.lower() != ".png" or not path.is_file():
            raise ValueError(f"{base}: the report links {link!r}, which is no PNG file inside {top}")
        return f"![{m['alt']}](data:image/png;base64,{base64.b64encode(path.read_bytes()).decode('ascii')})"

    return IMAGE.sub(one, markdown)


def render_html(markdown: str, title: str) -> str:
    """One HTML page of ``markdown`` (GitHub-style tables), styled inline, raw HTML in the text escaped."""
    import markdown as md

    converter = md.Markdown(extensions=["tables"], output_format="html")
    converter.preprocessors.deregister("html_block")  # raw HTML blocks are text
    converter.inlinePatterns.deregister("html")  # and so are inline tags
    body = converter.convert(markdown)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
            f"<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")
