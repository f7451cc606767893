"""A small builder for self-contained HTML reports.

Everything is embedded in one file (CSS inline, figures as base64 PNG data URIs): the page opens in any
browser, offline, without the tool, and can be mailed or archived as is. No JavaScript, no external URL.

Example::

    rep = Report("Operator variability")
    rep.heading("Summary")
    rep.table([{"group": "novice/novice", "dice": 0.81}], caption="Dice per group")
    rep.figure(fig, caption="Dice per group")
    rep.save("report.html")
"""

from __future__ import annotations

import base64
import datetime as _dt
import html as _html
import io
import math
import os
from pathlib import Path

from bonemet.atomic import write_text

CSS = """
:root { color-scheme: light; }
body { font-family: -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color: #1d2330;
       background: #fff; max-width: 1180px; margin: 0 auto; padding: 24px 32px 64px; line-height: 1.45; }
h1 { font-size: 1.75em; margin: 0 0 4px; border-bottom: 3px solid #2b5797; padding-bottom: 6px; }
h2 { font-size: 1.3em; margin: 32px 0 8px; color: #2b5797; border-bottom: 1px solid #d5dbe5; padding-bottom: 3px; }
h3 { font-size: 1.1em; margin: 22px 0 6px; }
p { margin: 6px 0 10px; }
p.meta { color: #5b6473; font-size: 0.9em; margin-top: 0; }
.tablewrap { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: 10px 0 22px; font-size: 0.9em; font-variant-numeric: tabular-nums; }
caption { caption-side: top; text-align: left; font-weight: 600; padding: 4px 0 6px; color: #1d2330; }
th, td { border: 1px solid #d5dbe5; padding: 4px 9px; text-align: left; vertical-align: top; }
th { background: #eef2f8; font-weight: 600; }
td.num { text-align: right; }
td.na { color: #8a93a3; font-style: italic; text-align: right; }
tr:nth-child(even) td { background: #f8f9fb; }
figure { margin: 12px 0 26px; }
figure img { max-width: 100%; height: auto; border: 1px solid #e3e7ee; }
figcaption { font-size: 0.9em; color: #3d4554; margin-top: 4px; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 6px 12px; }
footer { margin-top: 40px; color: #8a93a3; font-size: 0.8em; }
"""

_NA = "n/a"


def _esc(text) -> str:
    return _html.escape(str(text), quote=True)


def format_value(value, floatfmt: str = ".3f") -> tuple[str, str]:
    """(text, css class) of a table cell: numbers right-aligned, None/NaN as 'n/a'."""
    if value is None:
        return _NA, "na"
    if isinstance(value, bool):
        return ("yes" if value else "no"), ""
    if isinstance(value, int):
        return str(value), "num"
    if isinstance(value, float):
        if not math.isfinite(value):
            return _NA, "na"
        return format(value, floatfmt), "num"
    try:  # numpy scalars
        import numpy as np

        if isinstance(value, np.integer):
            return str(int(value)), "num"
        if isinstance(value, np.floating):
            return format_value(float(value), floatfmt)
    except ImportError:  # pragma: no cover
        pass
    return str(value), ""


class Report:
    """Build a self-contained HTML page: headings, paragraphs, tables, figures."""

    def __init__(self, title: str, subtitle: str | None = None):
        self.title = str(title)
        self.subtitle = subtitle
        self._parts: list[str] = []
        self._n_figures = 0
        self._n_tables = 0

    # -- content ---------------------------------------------------------------------------------------------
    def heading(self, text: str, level: int = 2) -> "Report":
        level = min(max(int(level), 1), 6)
        self._parts.append(f"<h{level}>{_esc(text)}</h{level}>")
        return self

    def paragraph(self, text: str, css_class: str | None = None) -> "Report":
        cls = f' class="{_esc(css_class)}"' if css_class else ""
        self._parts.append(f"<p{cls}>{_esc(text)}</p>")
        return self

    def note(self, text: str) -> "Report":
        """A highlighted paragraph (warnings, conventions the reader must know)."""
        return self.paragraph(text, "note")

    def table(self, rows: list[dict], columns: list[str] | None = None, caption: str | None = None,
              floatfmt: str = ".3f", headers: dict | None = None) -> "Report":
        """A table of ``rows`` (dicts). ``columns``: which keys, in order (default: keys in first-seen order).
        ``headers``: optional display names for columns. None/NaN cells show as 'n/a'."""
        rows = list(rows)
        if columns is None:
            columns = []
            for r in rows:
                for k in r:
                    if k not in columns:
                        columns.append(k)
        headers = headers or {}
        self._n_tables += 1
        out = ['<div class="tablewrap"><table>']
        out.append(f"<caption>{_esc(caption or f'Table {self._n_tables}')}</caption>")
        out.append("<thead><tr>" + "".join(f'<th scope="col">{_esc(headers.get(c, c))}</th>' for c in columns)
                   + "</tr></thead>")
        out.append("<tbody>")
        if not rows:
            out.append(f'<tr><td colspan="{max(len(columns), 1)}" class="na">no rows</td></tr>')
        for r in rows:
            cells = []
            for c in columns:
                text, cls = format_value(r.get(c), floatfmt)
                cells.append(f'<td class="{cls}">{_esc(text)}</td>' if cls else f"<td>{_esc(text)}</td>")
            out.append("<tr>" + "".join(cells) + "</tr>")
        out.append("</tbody></table></div>")
        self._parts.append("\n".join(out))
        return self

    def figure(self, fig, caption: str | None = None, dpi: int = 100, close: bool = True) -> "Report":
        """Embed a matplotlib figure as a PNG (closed afterwards unless ``close=False``)."""
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
        if close:
            import matplotlib.pyplot as plt

            plt.close(fig)
        return self.image_png(buf.getvalue(), caption)

    def image_png(self, png_bytes: bytes, caption: str | None = None, alt: str | None = None) -> "Report":
        """Embed PNG bytes (base64 data URI)."""
        if not bytes(png_bytes[:8]) == b"\x89PNG\r\n\x1a\n":
            raise ValueError("image_png expects PNG bytes")
        self._n_figures += 1
        alt = alt or caption or f"Figure {self._n_figures}"
        data = base64.b64encode(bytes(png_bytes)).decode("ascii")
        cap = f"<figcaption>Figure {self._n_figures}. {_esc(caption)}</figcaption>" if caption else ""
        self._parts.append(f'<figure><img src="data:image/png;base64,{data}" alt="{_esc(alt)}">{cap}</figure>')
        return self

    def raw(self, html_fragment: str) -> "Report":
        """Append an HTML fragment as is (caller is responsible for escaping)."""
        self._parts.append(html_fragment)
        return self

    # -- output ----------------------------------------------------------------------------------------------
    def html(self) -> str:
        from bonemet import __version__

        now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        sub = f'<p class="meta">{_esc(self.subtitle)}</p>' if self.subtitle else ""
        return (
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{_esc(self.title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            f"<h1>{_esc(self.title)}</h1>\n{sub}\n"
            f"<p class=\"meta\">Generated {now} by bonemet {_esc(__version__)}.</p>\n"
            + "\n".join(self._parts)
            + f"\n<footer>bonemet {_esc(__version__)} &middot; {now}</footer>\n</body>\n</html>\n"
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write the page atomically; returns its path."""
        return write_text(path, self.html())
