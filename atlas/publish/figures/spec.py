"""The figure spec file: `FigureSpec` (one figure) is derived from the registry of kinds, so a spec can name every
kind and each kind's keys; a key its kind does not take is one line naming the kind and its valid keys."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from atlas.publish.figures.kinds import COMMON, KINDS, FigureKind, spec_options
from atlas.publish.figures.page import DEFAULT_DPI, FIGURES_DIR, has_format
from atlas.run.manifest import Run
from atlas.shipped import file_or_shipped, shipped_figure_specs
from atlas.validation import load_yaml, validate

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
Format = Literal["png", "pdf"]
ANY_FIGURE = ("name", "kind", *(o.name for o in COMMON))  # the keys of every kind


def key_problem(kind: FigureKind, key: str) -> str | None:
    """Why `key` cannot be in a figure of `kind`, in one line naming its valid keys; None if it can."""
    if key in ANY_FIGURE or key in kind.keys:
        return None
    valid = f"a {kind.name} figure's keys: {', '.join(kind.keys)} (and any figure's: {', '.join(ANY_FIGURE)})"
    if key in spec_options():
        return f"'{key}' does not apply to a {kind.name} figure; {valid}"
    close = difflib.get_close_matches(key, [*kind.keys, *ANY_FIGURE], n=1, cutoff=0.5)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown key '{key}' of a {kind.name} figure{hint}; {valid}"


class FigureKeys(BaseModel):
    """What every figure spec checks, whatever its kind (the keys themselves come from the registry)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME_PATTERN)

    @model_validator(mode="before")
    @classmethod
    def _keys_of_kind(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("kind"), str) and data["kind"] in KINDS:
            problem = next(filter(None, (key_problem(KINDS[data["kind"]], str(key)) for key in data)), None)
            if problem:
                raise ValueError(problem)
        return data

    @model_validator(mode="after")
    def _needs_and_output(self) -> FigureKeys:
        kind = KINDS[self.kind]  # type: ignore[attr-defined]
        missing = [key for key in kind.needs if getattr(self, key) in (None, "", [])]
        if missing:
            raise ValueError(f"a {kind.name} figure needs '{missing[0]}'")
        output = getattr(self, "output", None)
        if output is not None and not has_format(output):
            raise ValueError(f"output '{output}' must end in .png or .pdf")
        return self

    def value(self, key: str) -> Any:
        """The figure's `key`, or its kind's default for it when left out."""
        given = getattr(self, key)
        return KINDS[self.kind].default(key) if given is None or given == "" else given  # type: ignore[attr-defined]


FigureSpec: type[FigureKeys] = create_model(  # one figure: name, kind and the keys of every kind, each optional
    "FigureSpec", __base__=FigureKeys, __module__=__name__,
    kind=(Literal[tuple(KINDS)], ...),  # type: ignore[valid-type]
    **{name: (Optional[option.type], None) for name, option in spec_options().items()})
FigureSpec.__doc__ = "One figure: what to show and where to write it. Which keys apply depends on `kind` (KINDS)."


class SpecFile(BaseModel):
    """A figure spec file: several figures of one run, optionally also bound into one PDF."""

    model_config = ConfigDict(extra="forbid")
    figures: list[FigureSpec] = Field(min_length=1)  # type: ignore[valid-type]
    dpi: int = Field(default=DEFAULT_DPI, ge=20, le=1200)
    format: Format = "png"
    combined: str | None = None  # a .pdf path holding every figure, one a page

    @field_validator("combined")
    @classmethod
    def _combined_is_pdf(cls, value: str | None) -> str | None:
        if value is not None and Path(value).suffix.lower() != ".pdf":
            raise ValueError("'combined' must be a .pdf file")
        return value

    @model_validator(mode="after")
    def _unique_names(self) -> SpecFile:
        names = [f.name for f in self.figures]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"figure name '{twice[0]}' is used twice; names must be unique")
        return self


def load_spec(path: str | Path) -> SpecFile:
    """Read and validate a figure spec file (or a shipped spec's name); every problem is one UserError line."""
    path = file_or_shipped(path, shipped_figure_specs(), "figure spec")
    return validate(SpecFile, load_yaml(path), str(path))


def figure_path(run: Run, spec: Any, default_format: str = "png") -> Path:
    """Where a figure goes: its `output` (relative: inside <run>/figures/), else <run>/figures/<name>.<format>."""
    if spec.output:
        out = Path(spec.output).expanduser()
        return out if out.is_absolute() else run.folder / FIGURES_DIR / out
    return run.folder / FIGURES_DIR / f"{spec.name}.{spec.format or default_format}"


def combined_path(run: Run, spec_file: SpecFile) -> Path | None:
    """The combined PDF of a spec file, resolved like a figure's `output`."""
    if not spec_file.combined:
        return None
    out = Path(spec_file.combined).expanduser()
    return out if out.is_absolute() else run.folder / FIGURES_DIR / out
