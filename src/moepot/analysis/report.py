"""A report as a list of blocks, written both as ``report.md`` and a self-contained ``report.html``.

Build a :class:`Report` with headings, paragraphs, tables and figures (PNG files inside the
report directory), then :meth:`Report.write`. The Markdown links the PNGs by relative path;
the HTML embeds them as base64 ``data:`` URIs, so it opens in any browser with no server and
can be moved around as a single file.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from moepot.errors import ConfigError
from moepot.io import atomic_path, make_dirs

Cell = str | int | float | None

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.92em; }
th, td { border: 1px solid #bbb; padding: 0.3em 0.7em; text-align: right; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1.2em 0; } img { max-width: 100%; border: 1px solid #ddd; }
figcaption { color: #555; font-size: 0.9em; }
code, pre { background: #f6f6f6; padding: 0.1em 0.3em; }
"""


def format_cell(value: Cell, digits: int = 4) -> str:
    """Text of a table cell: floats with ``digits`` significant digits, ``None`` as an en dash."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


@dataclass
class Report:
    """An ordered list of blocks rendered to Markdown and HTML.

    Attributes:
        title: the document title (first heading).
        directory: where the report and its figures live; figures must be inside it.
    """

    title: str
    directory: Path
    blocks: list[tuple[str, tuple]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("heading", (text, level)))

    def text(self, text: str) -> None:
        """A paragraph (plain text; written verbatim to Markdown, escaped in HTML)."""
        self.blocks.append(("text", (text,)))

    def code(self, text: str) -> None:
        """A preformatted block (commands, logs)."""
        self.blocks.append(("code", (text,)))

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Cell]]) -> None:
        for row in rows:
            if len(row) != len(header):
                raise ConfigError(f"report table: row {list(row)} has {len(row)} cells for {len(header)} columns")
        self.blocks.append(("table", (tuple(header), tuple(tuple(r) for r in rows))))

    def figure(self, path: str | os.PathLike, caption: str = "") -> None:
        """A PNG figure; ``path`` must lie inside :attr:`directory` (it is linked relatively)."""
        path = Path(path)
        try:
            relative = path.resolve().relative_to(self.directory.resolve())
        except ValueError as exc:
            raise ConfigError(f"report figure {path} is not inside the report directory {self.directory}") from exc
        self.blocks.append(("figure", (relative.as_posix(), caption)))

    # ------------------------------------------------------------------ rendering

    def to_markdown(self) -> str:
        lines = [f"# {self.title}", ""]
        for kind, args in self.blocks:
            if kind == "heading":
                text, level = args
                lines += [f"{'#' * level} {text}", ""]
            elif kind == "text":
                lines += [args[0], ""]
            elif kind == "code":
                lines += ["```", args[0], "```", ""]
            elif kind == "table":
                header, rows = args
                lines.append("| " + " | ".join(_md_cell(h) for h in header) + " |")
                lines.append("|" + "|".join(["---"] * len(header)) + "|")
                lines += ["| " + " | ".join(_md_cell(format_cell(c)) for c in row) + " |" for row in rows]
                lines.append("")
            elif kind == "figure":
                relative, caption = args
                lines += [f"![{caption or relative}]({relative})", ""]
                if caption:
                    lines += [f"*{caption}*", ""]
        return "\n".join(lines)

    def to_html(self) -> str:
        """The report as one HTML page with every figure embedded (base64 PNG)."""
        esc = html.escape
        parts = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{esc(self.title)}</title><style>{_STYLE}</style></head><body>",
            f"<h1>{esc(self.title)}</h1>",
        ]
        for kind, args in self.blocks:
            if kind == "heading":
                text, level = args
                parts.append(f"<h{level}>{esc(text)}</h{level}>")
            elif kind == "text":
                parts.append(f"<p>{esc(args[0])}</p>")
            elif kind == "code":
                parts.append(f"<pre>{esc(args[0])}</pre>")
            elif kind == "table":
                header, rows = args
                parts.append("<table><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr></thead>")
                body = "".join(
                    "<tr>" + "".join(f"<td>{esc(format_cell(c))}</td>" for c in row) + "</tr>" for row in rows
                )
                parts.append(f"<tbody>{body}</tbody></table>")
            elif kind == "figure":
                relative, caption = args
                data = base64.b64encode((self.directory / relative).read_bytes()).decode("ascii")
                parts.append(
                    f'<figure><img src="data:image/png;base64,{data}" alt="{esc(caption or relative)}">'
                    + (f"<figcaption>{esc(caption)}</figcaption>" if caption else "")
                    + "</figure>"
                )
        parts.append("</body></html>")
        return "\n".join(parts)

    def write(self) -> tuple[Path, Path]:
        """Write ``report.md`` and ``report.html`` into :attr:`directory` (atomically); return both paths."""
        make_dirs(self.directory)
        written = []
        for name, text in (("report.md", self.to_markdown()), ("report.html", self.to_html())):
            with atomic_path(self.directory / name) as tmp:
                tmp.write_text(text, encoding="utf-8")
            written.append(self.directory / name)
        return written[0], written[1]


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
