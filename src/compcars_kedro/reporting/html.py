"""Self-contained HTML building blocks: escaped text, tables, base64 images, sections, document.

No external resource is referenced (no CSS/JS/font links): the file opens offline and can be
mailed as is.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#222;
     background:#fafafa;line-height:1.45}
main{max-width:1280px;margin:0 auto;padding:1rem 2rem 4rem;background:#fff}
h1{font-size:1.7rem;margin:.6rem 0 .2rem}h2{font-size:1.3rem;border-bottom:2px solid #1f77b4;
     padding-bottom:.2rem;margin-top:2.2rem}h3{font-size:1.05rem;margin:1.2rem 0 .4rem}
.meta{color:#666;font-size:.85rem}nav.toc{background:#f0f4f8;padding:.6rem 1rem;border-radius:6px;
     font-size:.9rem}nav.toc ol{margin:.2rem 0;columns:2}
.table-wrap{overflow-x:auto;max-width:100%;margin:.4rem 0 1rem}
section{max-width:100%;overflow-wrap:anywhere}
table.data{border-collapse:collapse;font-size:.78rem;white-space:nowrap}
table.data th,table.data td{border:1px solid #ddd;padding:.2rem .45rem;text-align:right}
table.data th{background:#f0f4f8;position:sticky;top:0;text-align:left}
table.data td.txt{text-align:left}
table.data tr:nth-child(even) td{background:#fbfbfb}
figure{margin:.6rem 0 1.4rem}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85rem;color:#444;margin-top:.2rem}
.note{background:#fff8e1;border-left:4px solid #f0ad4e;padding:.4rem .8rem;margin:.5rem 0;
     font-size:.88rem}
.key{background:#eef6ee;border-left:4px solid #2ca02c;padding:.5rem .9rem;margin:.5rem 0}
pre{background:#f6f8fa;padding:.8rem;overflow-x:auto;font-size:.75rem;max-height:40rem}
dl.kv{display:grid;grid-template-columns:max-content auto;gap:.15rem 1rem;font-size:.9rem}
dl.kv dt{font-weight:600}dl.kv dd{margin:0;min-width:0;overflow-wrap:anywhere}
p.key{font-size:1.02rem}
"""


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def paragraph(text: str, cls: str | None = None) -> str:
    attr = f' class="{esc(cls)}"' if cls else ""
    return f"<p{attr}>{esc(text)}</p>"


def note(text: str) -> str:
    return f'<div class="note">{esc(text)}</div>'


def bullet_list(items: Iterable[str], raw: bool = False) -> str:
    lis = "".join(f"<li>{item if raw else esc(item)}</li>" for item in items)
    return f"<ul>{lis}</ul>" if lis else ""


def key_values(pairs: Sequence[tuple[str, Any]]) -> str:
    body = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in pairs)
    return f'<dl class="kv">{body}</dl>'


def format_value(value: Any, digits: int = 3) -> str:
    """Numbers with ``digits`` significant digits; NaN / None as an en dash."""
    if value is None:
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return "–"
        if abs(value) < 1e-9:  # numerical zero (e.g. -2.7e-15 from AMI)
            return "0"
        if float(value).is_integer() and abs(value) < 1e6:
            return str(int(value))
        if abs(value) >= 10 ** digits:
            return f"{value:.0f}"
        return f"{value:.{digits}g}"
    return str(value)


def _cell(value: Any, digits: int) -> str:
    numeric = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_))
    cls = "" if numeric else ' class="txt"'
    return f"<td{cls}>{esc(format_value(value, digits))}</td>"


def table(df: pd.DataFrame, digits: int = 3, max_rows: int | None = 500,
          caption: str | None = None, table_id: str | None = None) -> str:
    """An escaped HTML table (index dropped) inside a horizontally scrollable box."""
    if df is None or df.empty:
        return note("(empty table)")
    shown = df if max_rows is None else df.head(max_rows)
    head = "".join(f"<th>{esc(c)}</th>" for c in shown.columns)
    body = []
    for row in shown.itertuples(index=False):
        body.append("<tr>" + "".join(_cell(v, digits) for v in row) + "</tr>")
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    tid = f' id="{esc(table_id)}"' if table_id else ""
    more = "" if max_rows is None or len(df) <= max_rows else note(
        f"{len(df) - max_rows} more rows in the CSV file")
    return (f'<div class="table-wrap"><table class="data"{tid}>{cap}<thead><tr>{head}</tr>'
            f'</thead><tbody>{"".join(body)}</tbody></table></div>{more}')


def image(png_base64: str, caption: str = "", alt: str = "", fig_id: str | None = None) -> str:
    """An embedded PNG (``data:`` URI) with its caption."""
    fid = f' id="{esc(fig_id)}"' if fig_id else ""
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return (f'<figure{fid}><img alt="{esc(alt or caption)}" '
            f'src="data:image/png;base64,{png_base64}">{cap}</figure>')


def preformatted(obj: Any) -> str:
    text = obj if isinstance(obj, str) else json.dumps(obj, indent=2, default=str, sort_keys=False)
    return f"<pre>{esc(text)}</pre>"


def section(section_id: str, title: str, body: str) -> str:
    return (f'<section id="{esc(section_id)}">\n<h2>{esc(title)}</h2>\n{body}\n</section>')


def document(title: str, sections: Sequence[tuple[str, str, str]], subtitle: str = "") -> str:
    """The full page: title, table of contents, then ``(id, title, body)`` sections in order."""
    toc = "".join(f'<li><a href="#{esc(sid)}">{esc(stitle)}</a></li>'
                  for sid, stitle, _ in sections)
    parts = [section(sid, stitle, body) for sid, stitle, body in sections]
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
            f"<h1 id=\"top\">{esc(title)}</h1>\n<p class=\"meta\">{esc(subtitle)}</p>\n"
            f"<nav class=\"toc\"><strong>Contents</strong><ol>{toc}</ol></nav>\n"
            + "\n".join(parts) + "\n</main>\n</body>\n</html>\n")
