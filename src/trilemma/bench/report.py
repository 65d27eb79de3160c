"""The bench's outputs from a summary: results.json, results.csv, results.md (a Markdown table with a caption),
pareto.png (`plotting.pareto_plot`) and report.html (one self-contained page, offline)."""

from __future__ import annotations

import csv
import html
import io
import json
import math
from pathlib import Path

from ..paths import atomic_write_text
from ..plotting import pareto_plot, pareto_row_name
from ..runtime import Runtime
from ..samplers import SAMPLER_INFO

__all__ = ["SAMPLER_NAMES", "HEADERS", "BASE_COLUMNS", "METRIC_ORDER", "metric_columns", "markdown_table", "caption",
           "report_html", "write_outputs"]

SAMPLER_NAMES = {name: info.title for name, info in SAMPLER_INFO.items()}  # a sampler's name in tables and plots
BASE_COLUMNS = ["label", "sampler", "steps", "eta", "nfe", "seconds", "samples_per_second"]
HEADERS = {"label": "model", "nfe": "NFE", "seconds": "seconds", "samples_per_second": "samples/s",
           "high_quality_%": "high-quality %", "class_entropy": "class entropy", "class_KL": "class KL",
           "bpd": "bits/dim", "networks": "networks"}
METRIC_ORDER = ["modes", "high_quality_%", "SW", "FID", "FD-digits", "FD-FMNIST", "KID", "precision", "recall",
                "density", "coverage", "class_entropy", "class_KL", "bpd", "nonfinite_%"]


def metric_columns(results: list[dict]) -> list[str]:
    present = {k for r in results for k in r}
    return [m for m in METRIC_ORDER if m in present]


def _fmt(key: str, v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if key == "sampler":
        return SAMPLER_NAMES.get(v, v)
    if key == "eta":
        return f"{v:g}"
    if key in ("modes", "nfe", "steps"):
        return f"{v:g}" if isinstance(v, float) else str(v)
    if isinstance(v, float):
        if key == "seconds":
            return f"{v:.2f}"
        if key in ("samples_per_second", "high_quality_%"):
            return f"{v:.1f}"
        if key == "KID":
            return f"{v:.4f}"
        return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
    return str(v)


def _cell(r: dict, k: str) -> str:
    s = _fmt(k, r.get(k))
    for spread in ("_std", "_ci95"):  # a spread over seeds, or a 95% interval (bits/dim)
        if k + spread in r and s != "-":
            s += f" ± {_fmt(k, r[k + spread])}"
    return s


def runtime_name(r: dict) -> str:
    """How a row's networks ran (its `runtime` entry), as `runtime.Runtime.describe` writes it; "fp32" for rows
    written before rows recorded it."""
    return Runtime.from_dict(r.get("runtime")).describe()


def _runtimes(summary: dict) -> set[str]:
    return {runtime_name(r) for r in summary["rows"] if not r.get("floor")}


def markdown_table(summary: dict) -> str:
    """The results as a Markdown table; a `networks` column when rows ran their networks differently."""
    cols = BASE_COLUMNS + summary["metrics"]
    if len(_runtimes(summary)) > 1:
        cols = cols[:2] + ["networks"] + cols[2:]
    lines = ["| " + " | ".join(HEADERS.get(c, c) for c in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in summary["rows"]:
        cells = [("-" if r.get("floor") else runtime_name(r)) if c == "networks" else _cell(r, c) for c in cols]
        if r.get("floor"):
            cells = [f"*{c}*" if c != "-" else c for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_outputs(summary: dict, out_dir: Path) -> None:
    """results.json / .csv / .md, pareto.png and report.html from a summary."""
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / "results.json", json.dumps(summary, indent=2))
    cols = ["key"] + BASE_COLUMNS + ["spacing", "seconds_per_batch"] + summary["metrics"]
    cols += sorted({k for r in summary["rows"] for k in r if k.endswith(("_std", "_ci95"))})
    env = summary["environment"]
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=cols + ["networks", "commit", "device", "threads", "torch"],
                       extrasaction="ignore")
    w.writeheader()
    for r in summary["rows"]:
        w.writerow({**r, "networks": runtime_name(r), "commit": env["commit"], "device": env["device"],
                    "threads": env.get("threads"), "torch": env["torch"]})
    atomic_write_text(out_dir / "results.csv", buf.getvalue())
    md = markdown_table(summary)
    atomic_write_text(out_dir / "results.md", f"{caption(summary)}\n\n{md}\n")
    pareto_plot(summary, out_dir / "pareto.png", SAMPLER_NAMES, HEADERS)
    atomic_write_text(out_dir / "report.html", report_html(summary, md))


def caption(summary: dict) -> str:
    e = summary["environment"]
    seeds = summary["seeds"]
    runs = _runtimes(summary)
    networks = f"networks in {next(iter(runs))}" if len(runs) == 1 else "networks as the table says"
    bound = e.get("bpd_runtime")
    if bound and any("bpd" in r for r in summary["rows"]):
        networks += f" (bits/dim in {Runtime.from_dict(bound).describe()})"
    return (f"{summary['name']}: {summary['dataset']}, {summary['num_samples']} samples per row"
            f"{f' x {len(seeds)} seeds (mean ± std)' if len(seeds) > 1 else ''} against the {summary['reference']}; "
            f"seconds for all {summary['num_samples']} in batches of {summary['batch_size']} on {e['device']}, "
            f"{networks}, torch {e['torch']}, commit {e['commit'] or 'unknown'}.")


def report_html(summary: dict, md_table: str) -> str:
    """One self-contained page (images by relative path, no scripts or network)."""
    esc = html.escape
    e = summary["environment"]
    cols = BASE_COLUMNS + summary["metrics"]
    head = "".join(f"<th>{esc(HEADERS.get(c, c))}</th>" for c in cols)
    body = ""
    for r in summary["rows"]:
        cls = ' class="floor"' if r.get("floor") else ""
        body += f"<tr{cls}>" + "".join(f"<td>{esc(_cell(r, c))}</td>" for c in cols) + "</tr>\n"
    cards = ""
    for r in summary["rows"]:
        title = r["label"] if r.get("floor") else pareto_row_name(r, SAMPLER_NAMES)
        q = summary["quality_metric"]
        sub = f"{HEADERS.get(q, q)} {_cell(r, q)}" if r.get(q) is not None else ""
        cards += (f'<figure><img src="{esc(r["image"])}" alt="{esc(title)}"><figcaption><b>{esc(title)}</b>'
                  f"<br>{esc(sub)}</figcaption></figure>\n")
    meta = "".join(f"<li><b>{esc(k)}</b>: {esc(str(v))}</li>" for k, v in e.items())
    cmd = f"<p>Reproduce: <code>{esc(summary['command'])}</code></p>" if summary.get("command") else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(summary['name'])}: trilemma report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.9em; }} th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
th {{ background: #f0f0f0; }} td:first-child, td:nth-child(2) {{ text-align: left; }} tr.floor {{ font-style: italic; background: #fafae8; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 12px; }} figure {{ margin: 0; width: 270px; }}
figure img {{ width: 100%; image-rendering: pixelated; border: 1px solid #ddd; }} figcaption {{ font-size: 0.8em; }}
</style></head><body>
<h1>{esc(summary['name'])}</h1>
<p>{esc(caption(summary))}</p>{cmd}
<p>Quality: <b>{esc(HEADERS.get(summary['quality_metric'], summary['quality_metric']))}</b>;
diversity: <b>{esc(str(HEADERS.get(summary['diversity_metric'], summary['diversity_metric'])))}</b>.
The italic first row is the data itself: {esc(str(summary['num_samples']))} training images or points scored against the
{esc(summary['reference'])} exactly like a model's samples. It is the score of a perfect model at this sample count,
not a hard floor: the metrics are estimates from finitely many samples, so a model can land on either side of it by chance.</p>
<table><thead><tr>{head}</tr></thead><tbody>
{body}</tbody></table>
<h2>Speed against quality</h2>
<img src="pareto.png" alt="Pareto plot" style="max-width:100%">
<h2>Samples</h2>
<div class="grid">
{cards}</div>
<h2>Environment</h2><ul>{meta}</ul>
</body></html>
"""
