"""Teaching figures from a run folder: contact sheets, layer progressions, channel panels, activation-atlas
posters, circuits, first-layer weights and per-photo explanation posters, as PNG or PDF.

Two steps, one way: pure functions turn (Run, FigureSpec) into a `FigureLayout` (page size in inches, title,
panels with boxes, image paths or None for a gap, labels, captions) without drawing anything; then
`write_figure` / `write_combined_pdf` draw layouts with matplotlib (Agg, DejaVu Sans bundled with it).
Figures read the run only through `atlas.run.manifest` (and `atlas.run.mapfiles`, `atlas.run.explainfiles`);
nothing here imports TensorFlow.

    kinds.py     the registry of figure kinds (KINDS): options, defaults, help, layout function
    spec.py      the spec file (FigureSpec and SpecFile, derived from KINDS)
    jobs.py      FigureJob / SpecJob (plain data) and draw_job; command_job turns `atlas figure` options into one
    page.py      layout data (FigureLayout, Panel, ...) and the shared layout helpers
    grids.py     sheet, progression, panel and map layouts
    circuits.py  circuit and weights layouts
    explain.py   the explain poster: one photo at one layer, the four interfaces of the Building Blocks article
    draw.py      matplotlib: layouts to PNG and PDF
"""

from atlas.publish.figures.draw import write_combined_pdf, write_figure
from atlas.publish.figures.jobs import (FigureJob, Made, SpecJob, command_job, draw_job, job_spec, layout_figure,
                                        make_figures)
from atlas.publish.figures.kinds import KINDS, FigureKind, ItemSpec, Option
from atlas.publish.figures.page import DEFAULT_DPI, FIGURES_DIR, FigureLayout, find_mode
from atlas.publish.figures.spec import FigureSpec, SpecFile, load_spec

__all__ = ["DEFAULT_DPI", "FIGURES_DIR", "KINDS", "FigureJob", "FigureKind", "FigureLayout", "FigureSpec", "ItemSpec",
           "Made", "Option", "SpecFile", "SpecJob", "command_job", "draw_job", "find_mode", "job_spec",
           "layout_figure", "load_spec", "make_figures", "write_combined_pdf", "write_figure"]
