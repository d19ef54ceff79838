"""The customer report of one analysis run: Rich tables for the terminal, HTML with charts.

Both read the tables a run stored (``AnalysisRun.results``), so a report is instant and
shows exactly what the run found. The HTML is one self-contained file: the charts are
inline SVG drawn here, with no script and nothing fetched from the network, so it can be
mailed or opened offline.
"""

from __future__ import annotations

from datetime import datetime
from html import escape
from typing import Any

from rich.console import Console
from rich.table import Table

_Rows = list[dict[str, Any]]


def _pct(value: Any) -> str:
    return f"{float(value):.1%}"


def _money(value: Any) -> str:
    return f"{float(value):,.2f}"


def report_tables(results: dict[str, Any]) -> list[Table]:
    """The four tables of ``patron report customers``, in reading order."""
    tables = results.get("tables", {})
    out: list[Table] = []

    rfm = Table(title="RFM segments")
    for name in ("segment", "customers", "share of customers", "net spend", "share of spend"):
        rfm.add_column(name, justify="left" if name == "segment" else "right")
    for row in tables.get("rfm_segments", []):
        rfm.add_row(
            str(row["rfm_segment"]),
            f"{row['customers']:,}",
            _pct(row["share_of_customers"]),
            _money(row["monetary"]),
            _pct(row["share_of_monetary"]),
        )
    out.append(rfm)

    spend = Table(title="Spend groups (average spend per period)")
    for name in (
        "band",
        "spend from",
        "spend to",
        "customers",
        "share of customers",
        "share of turnover",
    ):
        spend.add_column(name, justify="right")
    for row in tables.get("spend_groups", []):
        spend.add_row(
            str(row["band"]),
            _money(row["min_spend"]),
            _money(row["max_spend"]),
            f"{row['customers']:,}",
            _pct(row["share_of_customers"]),
            _pct(row["share_of_turnover"]),
        )
    out.append(spend)

    deciles = Table(title="CLV deciles (most valuable first)")
    for name in ("decile", "customers", "mean CLV", "CLV from", "CLV to", "share of CLV"):
        deciles.add_column(name, justify="right")
    for row in tables.get("clv_deciles", []):
        deciles.add_row(
            str(row["decile"]),
            f"{row['customers']:,}",
            _money(row["mean_clv"]),
            _money(row["min_clv"]),
            _money(row["max_clv"]),
            _pct(row["share_of_clv"]),
        )
    out.append(deciles)

    stages = Table(title="Lifecycle stages")
    for name in ("stage", "customers", "share"):
        stages.add_column(name, justify="left" if name == "stage" else "right")
    for row in tables.get("lifecycle", []):
        stages.add_row(
            str(row["stage"]).replace("_", " "),
            f"{row['customers']:,}",
            _pct(row["share_of_customers"]),
        )
    out.append(stages)
    return out


def print_report(console: Console, results: dict[str, Any], *, as_of: datetime) -> None:
    """Print the report tables and the headline model figures."""
    console.print(f"[bold]Customer analysis as of {as_of:%Y-%m-%d %H:%M} UTC[/bold]")
    for table in report_tables(results):
        console.print(table)
    models = results.get("models", {})
    if "gini" in models:
        console.print(f"Gini coefficient of spend: {models['gini']:.3f}")
    bg = models.get("bg_nbd")
    if bg:
        console.print(
            "BG/NBD: r={r:.4g} alpha={alpha:.4g} a={a:.4g} b={b:.4g}, "
            "log-likelihood {log_likelihood:,.1f} over {distinct_triples:,} distinct "
            "(x, t_x, T)".format(**bg)
        )


# -- HTML ------------------------------------------------------------------------------------

_W, _H, _PAD = 420, 300, 40


def _lorenz_svg(points: _Rows) -> str:
    """Pareto (Lorenz) curve: share of customers (poorest first) against share of turnover."""

    def xy(px: float, py: float) -> str:
        return f"{_PAD + px * (_W - 2 * _PAD):.1f},{_H - _PAD - py * (_H - 2 * _PAD):.1f}"

    path = " ".join(xy(float(p["customers_share"]), float(p["turnover_share"])) for p in points)
    return (
        f'<svg viewBox="0 0 {_W} {_H}" role="img" aria-label="Pareto curve of spend">'
        f'<line x1="{_PAD}" y1="{_H - _PAD}" x2="{_W - _PAD}" y2="{_PAD}" class="diag"/>'
        f'<polyline points="{path}" class="curve"/>'
        f'<text x="{_W / 2}" y="{_H - 8}" text-anchor="middle">share of customers</text>'
        f'<text x="12" y="{_H / 2}" transform="rotate(-90 12 {_H / 2})" '
        f'text-anchor="middle">share of turnover</text></svg>'
    )


def _grid_svg(cells: _Rows) -> str:
    """RFM grid: recency score across, frequency score up, shade by customer count."""
    if not cells:
        return "<p>No customers with purchases.</p>"
    top = max(int(c["customers"]) for c in cells) or 1
    bins = max(max(int(c["r_score"]), int(c["f_score"])) for c in cells)
    size = (_H - 2 * _PAD) / bins
    rects = []
    for cell in cells:
        r, f, n = int(cell["r_score"]), int(cell["f_score"]), int(cell["customers"])
        x, y = _PAD + (r - 1) * size, _H - _PAD - f * size
        shade = 0.1 + 0.9 * n / top
        rects.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{size - 2:.1f}" height="{size - 2:.1f}" '
            f'fill-opacity="{shade:.2f}" class="cell"><title>R{r} F{f}: {n:,}</title></rect>'
            f'<text x="{x + size / 2:.1f}" y="{y + size / 2 + 4:.1f}" '
            f'text-anchor="middle">{n:,}</text>'
        )
    return (
        f'<svg viewBox="0 0 {_W} {_H}" role="img" aria-label="RFM grid">{"".join(rects)}'
        f'<text x="{_PAD + bins * size / 2}" y="{_H - 8}" text-anchor="middle">'
        f"recency score (5 = most recent)</text>"
        f'<text x="12" y="{_H / 2}" transform="rotate(-90 12 {_H / 2})" '
        f'text-anchor="middle">frequency score</text></svg>'
    )


def _bars_svg(rows: _Rows, *, label: str, value: str, title: str) -> str:
    """A bar per row, e.g. mean CLV per decile."""
    if not rows:
        return "<p>No values.</p>"
    top = max(float(r[value]) for r in rows) or 1.0
    width = (_W - 2 * _PAD) / len(rows)
    bars = []
    for index, row in enumerate(rows):
        height = max(float(row[value]), 0.0) / top * (_H - 2 * _PAD)
        x = _PAD + index * width
        bars.append(
            f'<rect x="{x + 2:.1f}" y="{_H - _PAD - height:.1f}" width="{width - 4:.1f}" '
            f'height="{height:.1f}" class="bar"><title>{escape(str(row[label]))}: '
            f"{float(row[value]):,.2f}</title></rect>"
            f'<text x="{x + width / 2:.1f}" y="{_H - _PAD + 14}" text-anchor="middle">'
            f"{escape(str(row[label]))}</text>"
        )
    label_text = escape(title)
    shapes = "".join(bars)
    return f'<svg viewBox="0 0 {_W} {_H}" role="img" aria-label="{label_text}">{shapes}</svg>'


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{escape(str(c.header))}</th>" for c in table.columns)
    cells = [list(c.cells) for c in table.columns]
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(str(col[i]))}</td>" for col in cells) + "</tr>"
        for i in range(table.row_count)
    )
    return f"<h2>{escape(str(table.title))}</h2><table><tr>{head}</tr>{body}</table>"


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;max-width:72rem;color:#1d2733}
table{border-collapse:collapse;margin-bottom:1.5rem}td,th{padding:.25rem .6rem;
border-bottom:1px solid #d8dee4;text-align:right}td:first-child,th:first-child{text-align:left}
.charts{display:flex;flex-wrap:wrap;gap:1.5rem}figure{margin:0}svg{width:26rem;height:auto;
font-size:11px}.curve{fill:none;stroke:#1f6feb;stroke-width:2}.diag{stroke:#999;
stroke-dasharray:4}.cell,.bar{fill:#1f6feb}
"""


def html_report(results: dict[str, Any], *, as_of: datetime, model_version: str) -> str:
    """The report as one HTML page: the tables and three charts."""
    tables = results.get("tables", {})
    models = results.get("models", {})
    clv_bars = _bars_svg(
        tables.get("clv_deciles", []), label="decile", value="mean_clv", title="CLV distribution"
    )
    charts = (
        f"<figure>{_lorenz_svg(tables.get('lorenz', []))}<figcaption>Pareto curve; "
        f"Gini {float(models.get('gini', 0.0)):.3f}</figcaption></figure>"
        f"<figure>{_grid_svg(tables.get('rfm_grid', []))}<figcaption>RFM grid (customers "
        f"per recency and frequency score)</figcaption></figure>"
        f"<figure>{clv_bars}"
        f"<figcaption>CLV distribution: mean CLV per decile</figcaption></figure>"
    )
    body = "".join(_html_table(t) for t in report_tables(results))
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>Patron customer report {as_of:%Y-%m-%d}</title><style>{_STYLE}</style></head>"
        f"<body><h1>Customer report as of {as_of:%Y-%m-%d %H:%M} UTC</h1>"
        f"<p>Model version {escape(model_version)}.</p>"
        f'<div class="charts">{charts}</div>{body}</body></html>'
    )
