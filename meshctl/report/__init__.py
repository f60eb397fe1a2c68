"""meshctl.report: renderers over a Plan (text, JSON, markdown). They render; they never compute.

Each renderer is imported on first use: the text one needs rich, the JSON one nothing.
"""

from typing import TYPE_CHECKING

from meshctl.lazyexports import lazy_exports

if TYPE_CHECKING:
    from meshctl.report.plan_json import render_json
    from meshctl.report.plan_markdown import MARKDOWN_LIMIT, render_markdown
    from meshctl.report.plan_text import render_text

__all__ = ["MARKDOWN_LIMIT", "render_json", "render_markdown", "render_text"]

__getattr__ = lazy_exports(__name__, {
    "render_json": "plan_json", "MARKDOWN_LIMIT": "plan_markdown", "render_markdown": "plan_markdown",
    "render_text": "plan_text",
})
