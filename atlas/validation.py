"""Read YAML files and validate them against pydantic models; every failure is one line naming the fix."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from atlas.errors import UserError

M = TypeVar("M", bound=BaseModel)


def load_yaml(path: str | Path) -> Any:
    """Parse a YAML file; a missing file or a syntax error is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file; check the path (configs live in configs/)")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{path}: not valid YAML{at} ({problem}); fix the syntax") from None


def validate(cls: type[M], data: Any, origin: str) -> M:
    """Build `cls` from `data`, or raise one UserError describing the first problem."""
    if data is None:
        data = {}
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()  # a misspelt key also makes a required one "missing": name the misspelling
        first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        raise UserError(f"{origin}: {describe(cls, first, errors)}") from None


def describe(cls: type[BaseModel], error: dict[str, Any], errors: list[dict[str, Any]] | None = None) -> str:
    """One pydantic error as a sentence, suggesting the closest key for an unknown one. For a value of a union
    (`int | list[int]`), `errors` (all of them) picks the error inside the member the value's shape matches, or
    names every form the value may take."""
    tag = _union_tag(error["loc"])
    if tag is not None and errors:
        members = [e for e in errors if _union_tag(e["loc"]) == tag and tuple(e["loc"][:tag]) == error["loc"][:tag]]
        inside = [e for e in members if len(e["loc"]) > tag + 1 or not _mismatch(e)]  # the value had its shape
        if inside:
            error = error if error in inside else inside[0]
        else:
            where = _where(error["loc"][:tag])
            forms = list(dict.fromkeys(_form(cls, str(e["loc"][tag])) for e in members))
            either = ", ".join(forms[:-1]) + " or " + forms[-1] if len(forms) > 1 else forms[0]
            return f"{where}: give {either}{_shown(error.get('input'))}"
    loc = _keys(error["loc"])
    where = _where(error["loc"])
    if error["type"] == "extra_forbidden":
        key = str(loc[-1])
        known = sorted(_fields_at(cls, loc[:-1]))
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
        hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(known)}"
        elsewhere = _homes(cls, key)
        if elsewhere:  # a right key at the wrong level, e.g. render: {diversity: 4}
            hint = (f"'{key}' is a top-level key: write it beside '{loc[0]}', not inside it" if key in elsewhere
                    else f"did you mean {' or '.join(elsewhere)}?")
        return f"unknown key '{where}' ({hint})"
    if error["type"] == "missing":
        return f"missing required key '{where}'; add it"
    message = error["msg"].removeprefix("Value error, ")
    return f"{where}: {message}{_shown(error.get('input'))}"


SCALAR_FORMS = {"int": "a whole number", "constrained-int": "a whole number", "float": "a number",
                "constrained-float": "a number", "str": "a string", "constrained-str": "a string",
                "bool": "a boolean (true or false)", "none": "null"}


def _mismatch(error: dict[str, Any]) -> bool:
    """The value is not of the member's type at all (rather than out of its range)."""
    return error["type"].endswith(("_type", "_parsing")) or error["type"] in ("literal_error", "int_from_float")


def _is_tag(part: Any) -> bool:
    """A part of a pydantic error's location that names a member of a union (`int`, `list[int]`, `ChannelRule`,
    `literal['all']`) or a validator, not a key or an index."""
    return isinstance(part, str) and (part in SCALAR_FORMS or "[" in part or part[:1].isupper()
                                      or part.startswith(("function-", "tagged-union")))


def _union_tag(loc: tuple[Any, ...]) -> int | None:
    """The index in `loc` of its first union member's name, if any."""
    return next((i for i, part in enumerate(loc) if _is_tag(part) and not str(part).startswith("function-")), None)


def _keys(loc: tuple[Any, ...] | list[Any]) -> list[Any]:
    """The keys and indices of a location, without union members' and validators' names."""
    return [part for part in loc if not _is_tag(part)]


def _where(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in _keys(loc)) or "top level"


def _shown(value: Any) -> str:
    return "" if isinstance(value, (dict, list)) else f" (got {value!r})"


def _form(cls: type[BaseModel], tag: str) -> str:
    """A union member's name in words: `list[int]` -> a list of whole numbers, `literal['all']` -> 'all'."""
    if tag in SCALAR_FORMS:
        return SCALAR_FORMS[tag]
    if tag.startswith("literal[") and tag.endswith("]"):
        return tag[len("literal["):-1].replace(",", " or")
    if tag.startswith("list[") and tag.endswith("]"):
        inner = _form(cls, tag[len("list["):-1])
        return "a list of " + (inner.removeprefix("a ") + "s" if inner.startswith("a ") else inner)
    model = _models(cls).get(tag)
    if model is not None:
        return f"a mapping with keys {', '.join(model.model_fields)}"
    return tag


def _models(cls: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """Every model class reachable from `cls`'s fields, by name."""
    found: dict[str, type[BaseModel]] = {}
    stack: list[Any] = [cls]
    while stack:
        annotation = stack.pop()
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation.__name__ in found:
                continue
            found[annotation.__name__] = annotation
            stack.extend(field.annotation for field in annotation.model_fields.values())
        stack.extend(getattr(annotation, "__args__", ()))
    return found


def _homes(cls: type[BaseModel], key: str, prefix: str = "") -> list[str]:
    """Where `key` is a field in `cls` or the models below it, as dotted paths, shallowest first."""
    homes = [prefix + key] if key in cls.model_fields else []
    for name, field in cls.model_fields.items():
        inner = _inner_model(field.annotation)
        if inner is not None and inner is not cls:
            homes += _homes(inner, key, f"{prefix}{name}.")
    return homes


def _fields_at(cls: type[BaseModel], loc: list[Any]) -> set[str]:
    """Field names of the (nested) model found by following `loc` from `cls`."""
    model: Any = cls
    for part in loc:
        if isinstance(part, int) or not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return set()
        model = _inner_model(field.annotation)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return set(model.model_fields)
    return set()


def _inner_model(annotation: Any) -> Any:
    """The BaseModel inside an annotation such as `Model`, `list[Model]` or `Model | None`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None
