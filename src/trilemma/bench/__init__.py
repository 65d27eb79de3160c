"""`trilemma bench`: place every (model, sampler, steps) on speed, quality and diversity in one run.

The flow, one module each:

    grid.py     the grid file -> BenchConfig -> BenchRows (checked before anything runs)
    scoring.py  a Scorer per kind of data: points (modes, high-quality %, SW) or images (FD, precision,
                recall, density / coverage, class entropy)
    run.py      every row sampled from the same per-sample noise, timed (warm-up excluded), scored -> RowResults
    report.py   results.json / .csv / .md, pareto.png (plotting.py) and report.html

The real data's own score (train split against test split, at the same sample count) is the first row of every
table: what a perfect model would score, up to the metrics' sampling noise.
"""

from .grid import BenchConfig, BenchRow, config_from_dict, expand_rows, load_grid
from .report import HEADERS, SAMPLER_NAMES, markdown_table, report_html, write_outputs
from .run import RowResult, environment, run_bench
from .scoring import ImageScorer, PointScorer, Scorer, make_scorer

__all__ = ["BenchConfig", "BenchRow", "RowResult", "Scorer", "PointScorer", "ImageScorer", "load_grid",
           "config_from_dict", "expand_rows", "make_scorer", "run_bench", "write_outputs", "environment",
           "markdown_table", "report_html", "HEADERS", "SAMPLER_NAMES"]
