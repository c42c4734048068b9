"""The page as HTML (self-contained: inline CSS, base64 PNGs) and the same blocks as Markdown."""

from __future__ import annotations

import base64
import html

from pipeline.report.blocks import H, Img, Mark, P, Section, Table

# --------------------------------------------------------------------------- rendering


CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1d1d1f;
max-width:980px;margin:0 auto;padding:8px 20px 60px;background:#fff}
h1{font-size:1.7em;margin:.6em 0 .2em}h2{font-size:1.35em;border-bottom:2px solid #e3e3e3;padding-bottom:4px;margin-top:2.2em}
h3{font-size:1.05em;margin:1.5em 0 .4em}p{margin:.5em 0}
nav{position:sticky;top:0;background:#fff;border-bottom:1px solid #e3e3e3;padding:6px 0;font-size:14px;z-index:1}
nav a{margin-right:1em;color:#0b57a4;text-decoration:none;white-space:nowrap}
.tbl{overflow-x:auto;margin:.4em 0 1.1em;max-width:100%}
table{border-collapse:collapse;font-size:13px;font-variant-numeric:tabular-nums}
th,td{border-bottom:1px solid #e6e6e6;padding:4px 9px;text-align:left;vertical-align:top}
th{background:#f5f6f7;font-weight:600;white-space:nowrap}
td{max-width:34em;overflow-wrap:break-word}td:first-child{max-width:18em}td ul{margin:0;padding-left:1.1em}td li{margin:.1em 0}caption{caption-side:bottom;text-align:left;color:#666;font-size:12px;padding-top:4px}
img{display:block;max-width:100%;height:auto;margin:.6em 0}
details{margin:.3em 0 1em}summary{cursor:pointer;color:#0b57a4;font-size:14px}
.bad{color:#b3261e;font-weight:600}.warn{color:#9a5b00;font-weight:600}.good{color:#1a7f37}.muted{color:#6b6b6b}
.meta{color:#6b6b6b;font-size:13px}.strong{font-weight:600}
"""


def _cell_html(c) -> str:
    if isinstance(c, Mark):
        return f'<span class="{c.kind}">{html.escape(c.text)}</span>'
    if isinstance(c, tuple):
        return "".join(_cell_html(x) for x in c)
    if isinstance(c, list):
        return "<ul>" + "".join(f"<li>{_cell_html(x)}</li>" for x in c) + "</ul>"
    return html.escape(str(c))


def _block_html(b) -> str:
    if isinstance(b, H):
        return f"<h3>{html.escape(b.text)}</h3>"
    if isinstance(b, P):
        return "<p>" + "".join(_cell_html(x) for x in b.parts) + "</p>"
    if isinstance(b, Img):
        data = base64.b64encode(b.png).decode("ascii")
        return f'<img src="data:image/png;base64,{data}" alt="{html.escape(b.alt)}">'
    if isinstance(b, Table):
        head = "".join(f"<th>{html.escape(h)}</th>" for h in b.head)
        body = "".join("<tr>" + "".join(f"<td>{_cell_html(c)}</td>" for c in row) + "</tr>" for row in b.rows)
        caption = f"<caption>{html.escape(b.caption)}</caption>" if b.caption else ""
        table = f'<div class="tbl"><table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
        if b.fold:
            return f"<details><summary>{html.escape(b.fold)} ({len(b.rows)} rows)</summary>{table}</details>"
        return table
    raise TypeError(f"unknown block {type(b).__name__}")


def render_html(title: str, meta: str, top: Table, sections: list[Section]) -> str:
    nav = "".join(f'<a href="#{s.anchor}">{s.number}. {html.escape(s.title)}</a>' for s in sections)
    body = [f"<h1>{html.escape(title)}</h1>", f'<p class="meta">{html.escape(meta)}</p>', f"<nav>{nav}</nav>",
            "<h2 id=\"glance\">At a glance</h2>", _block_html(top)]
    for s in sections:
        body.append(f'<h2 id="{s.anchor}">{s.number}. {html.escape(s.title)}</h2>')
        body.extend(_block_html(b) for b in s.blocks)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def _inline_md(c) -> str:
    if isinstance(c, tuple):
        return "".join(_inline_md(x) for x in c)
    return _mark_md(c) if isinstance(c, Mark) else str(c)


def _cell_md(c) -> str:
    s = "; ".join(_inline_md(x) for x in c) if isinstance(c, list) else _inline_md(c)
    return " ".join(s.split()).replace("|", "\\|")


def _mark_md(m: Mark) -> str:
    core = m.text.strip()
    if m.kind not in ("bad", "warn") or not core:
        return m.text
    return m.text[: len(m.text) - len(m.text.lstrip())] + f"**{core}**" + m.text[len(m.text.rstrip()):]


def _block_md(b) -> str:
    if isinstance(b, H):
        return f"### {b.text}"
    if isinstance(b, P):
        return "".join(_mark_md(x) if isinstance(x, Mark) else str(x) for x in b.parts)
    if isinstance(b, Img):
        return f"_Figure in report.html: {b.alt}._"
    if isinstance(b, Table):
        lines = ["| " + " | ".join(_cell_md(h) for h in b.head) + " |", "|" + "---|" * len(b.head)]
        lines += ["| " + " | ".join(_cell_md(c) for c in row) + " |" for row in b.rows]
        if b.caption:
            lines.append(f"\n_{_cell_md(b.caption)}_")
        return "\n".join(lines)
    raise TypeError(f"unknown block {type(b).__name__}")


def render_md(title: str, meta: str, top: Table, sections: list[Section]) -> str:
    parts = [f"# {title}", meta, "## At a glance", _block_md(top)]
    for s in sections:
        parts.append(f"## {s.number}. {s.title}")
        parts.extend(_block_md(b) for b in s.blocks)
    return "\n\n".join(parts) + "\n"
