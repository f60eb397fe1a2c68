"""meshctl.report: renderers over a Plan (text, JSON, markdown). They render; they never compute."""

from meshctl.report.plan_json import render_json
from meshctl.report.plan_markdown import MARKDOWN_LIMIT, render_markdown
from meshctl.report.plan_text import render_text

__all__ = ["MARKDOWN_LIMIT", "render_json", "render_markdown", "render_text"]
