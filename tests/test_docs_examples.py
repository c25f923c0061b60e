"""The docs' examples cannot drift from the code: every YAML block of README.md and docs/ validates against the
config or figure-spec schema, and every `atlas ...` line of a code block parses with the CLI's own parser (the
commands and options named in inline code too). A block that is meant as something else is marked with
`<!-- not-a-config -->` on the line before it."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from atlas.cli import build_parser
from atlas.errors import UserError
from atlas.publish.figures import SpecFile
from atlas.publish.multisite import SiteConfig
from atlas.run.config import RenderConfig, SweepConfig
from atlas.validation import validate

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^ {0,3}(?P<fence>`{3,}|~{3,})(?P<info>[^\n]*)\n(?P<body>.*?)^ {0,3}(?P=fence)[`~]*[ \t]*$",
                   re.MULTILINE | re.DOTALL)
NOT_A_CONFIG = "<!-- not-a-config -->"
SPAN = re.compile(r"(?<!`)`(?!`)([^`\n]+)`(?!`)")
YAML_LINE = re.compile(r"^\s*(#.*|-\s.*|[a-z_]+:(\s.*)?)?$")


def blocks(page: Path) -> Iterator[tuple[int, str, str, bool]]:
    """(line number, info string, body, marked not-a-config) of every fenced block of a page."""
    text = page.read_text(encoding="utf-8")
    for match in BLOCK.finditer(text):
        before = text[:match.start()].rstrip().rsplit("\n", 1)[-1].strip()
        yield (text.count("\n", 0, match.start()) + 1, match["info"].strip().lower(), match["body"],
               before == NOT_A_CONFIG)


def yaml_blocks() -> list[tuple[str, str, bool]]:
    return [(f"{page.relative_to(ROOT)}:{line}", body, marked) for page in PAGES
            for line, info, body, marked in blocks(page) if info in ("yaml", "yml")]


def is_figure_spec(data: Any) -> bool:
    return isinstance(data, dict) and bool({"figures", "sheets"} & set(data))


@pytest.mark.parametrize("where, body, marked", yaml_blocks(), ids=[w for w, _, _ in yaml_blocks()])
def test_every_yaml_block_validates(where: str, body: str, marked: bool) -> None:
    """A block with `figures:` is a figure spec, one with `runs:` a site config (several models in one site); any
    other is a sweep config or a fragment of one (keys of the top level, merged into the minimal config, which is
    empty: every key has a default)."""
    if marked:
        return
    data = yaml.safe_load(body)
    assert isinstance(data, dict), f"{where}: not a YAML mapping; mark it {NOT_A_CONFIG} if it is not a config"
    schema = SpecFile if is_figure_spec(data) else SiteConfig if "runs" in data else SweepConfig
    try:
        validate(schema, data, where)
    except UserError as exc:
        pytest.fail(f"{exc} (the docs' {schema.__name__} no longer validates)")


def test_blocks_that_look_like_yaml_are_tagged() -> None:
    """A YAML block without its `yaml` tag would escape the test above."""
    untagged = [f"{page.relative_to(ROOT)}:{line}" for page in PAGES for line, info, body, marked in blocks(page)
                if not info and not marked and body.strip()
                and all(YAML_LINE.match(row) for row in body.splitlines())
                and any(re.match(r"^[a-z_]+:", row) for row in body.splitlines())]
    assert not untagged, f"tag these blocks ```yaml (or mark them {NOT_A_CONFIG}): {untagged}"


# ------------------------------------------------------------------------------------------------- commands

# Placeholders a docs line may use, and a value the parser takes for each.
SHELL = {">", ">>", "|", "&&", ";", "2>&1"}
PLACEHOLDERS = {"N": "3", "C": "139", "K/N": "1/2", "LAYER:CH": "mixed3a:1", "PORT": "8000"}


def command_lines() -> list[tuple[str, str]]:
    """(where, line) of every `atlas ...` line of a code block (comments dropped, a `$ ` prompt too)."""
    found = []
    for page in PAGES:
        for line, info, body, _ in blocks(page):
            if info not in ("", "sh", "bash", "console", "shell"):
                continue
            for k, row in enumerate(body.splitlines()):
                row = row.strip().removeprefix("$ ")
                if row.startswith("atlas "):
                    found.append((f"{page.relative_to(ROOT)}:{line + 1 + k}", row))
    return found


def parse(tokens: list[str]) -> None:
    """Parse an argument list as `atlas` would; UserError on anything it refuses."""
    build_parser().parse_args(tokens)


@pytest.mark.parametrize("where, line", command_lines(), ids=[w for w, _ in command_lines()])
def test_every_command_line_in_a_code_block_parses(where: str, line: str) -> None:
    tokens = shlex.split(line, comments=True)[1:]
    cut = next((k for k, t in enumerate(tokens) if t in SHELL), len(tokens))  # `> mine.yaml`, `| head`, `&& ...`
    tokens = [PLACEHOLDERS.get(t, t) for t in tokens[:cut]]
    try:
        parse(tokens)
    except UserError as exc:
        pytest.fail(f"{where}: `{line}`: {exc}")


def test_the_command_lines_are_found() -> None:
    lines = [line for _, line in command_lines()]
    assert len(lines) > 30 and any(line.startswith("atlas map ") for line in lines)


def inline_commands() -> list[tuple[str, str]]:
    """(where, text) of every inline code span of the prose and tables that starts with `atlas `."""
    found = []
    for page in PAGES:
        text = BLOCK.sub(lambda m: "\n" * m.group(0).count("\n"), page.read_text(encoding="utf-8"))
        for number, row in enumerate(text.splitlines(), 1):
            for span in SPAN.findall(row):
                if span.startswith("atlas "):
                    found.append((f"{page.relative_to(ROOT)}:{number}", span.replace("\\|", "|")))
    return found


def subparser(tokens: list[str]) -> tuple[Any, list[str]]:
    """The parser of the (sub)command the tokens name, and the tokens after its name."""
    parser = build_parser()
    rest = [t for t in tokens if t != "--verbose"]
    while rest:
        choices = next((a.choices for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"), None)
        if not choices or rest[0] not in choices:
            break
        parser, rest = choices[rest[0]], rest[1:]
    return parser, rest


def option_problems(span: str) -> list[str]:
    """What in an inline synopsis (`atlas dream ... --objective channel|neuron`) the parser does not know: the
    command, an option, or an alternative of an option with choices."""
    tokens = [t.strip("[]()") for t in span.split()[1:] if t != "--verbose"]
    if not tokens or tokens[0] in ("COMMAND", "..."):
        return []
    parser, rest = subparser(tokens)
    if parser.prog == "atlas":
        return [f"no command '{tokens[0]}'"]
    options = parser._option_string_actions
    problems = []
    for k, token in enumerate(rest):
        for name in token.split("|"):
            if not name.startswith("-"):
                continue
            name = name.split("=")[0]
            if name not in options:
                problems.append(f"`{parser.prog}` has no option {name}")
                continue
            value = rest[k + 1] if k + 1 < len(rest) and "|" not in token else None
            choices = options[name].choices
            if choices and value and not value.startswith("-") and value != "...":
                problems += [f"{name} takes no '{v}'" for v in value.split("|") if v not in choices]
    return problems


def test_every_inline_command_names_real_commands_options_and_choices() -> None:
    problems = [f"{where}: `{span}`: {p}" for where, span in inline_commands() for p in option_problems(span)]
    assert not problems, "\n".join(problems)


def test_the_inline_checker_catches_drift() -> None:
    assert option_problems("atlas dream ... --objective channel|neuron|pixels") == ["--objective takes no 'pixels'"]
    assert option_problems("atlas map FOLDER --grids 10") == ["`atlas map` has no option --grids"]
    assert option_problems("atlas paint x") == ["no command 'paint'"]
    assert option_problems("atlas figure RUN_FOLDER --sheet|--progression|--panel|--spec ... -o FILE") == []
    assert len(inline_commands()) > 30


# ------------------------------------------------------------------------------------------- settings, kinds

def settings_table() -> list[str]:
    """The setting names of dream.md's settings table (its first column, up to a `:` or `;`)."""
    text = (ROOT / "docs" / "dream.md").read_text(encoding="utf-8")
    section = text.split("## Settings", 1)[1].split("\n## ", 1)[0]
    names = []
    for row in section.splitlines():
        if row.startswith("| ") and not row.startswith(("| setting", "|---")):
            for piece in re.split(r"[;,]", row.split("|")[1].split(":")[0]):  # "method; steps with fourier; ..."
                names.append(piece.split()[0])
    return names


def test_each_documented_render_setting_is_where_the_docs_put_it() -> None:
    """dream.md says its settings are keys of `render:` in a config, naming the top-level exceptions: a
    `render: {diversity: 4}` written from the docs must validate."""
    text = (ROOT / "docs" / "dream.md").read_text(encoding="utf-8")
    section = text.split("## Settings", 1)[1].split("\n## ", 1)[0]
    clause = re.search(r"except (.*?) top-level", section, re.DOTALL)  # "except `diversity` ..., which are top-level"
    top_level = set(re.findall(r"`([a-z_]+)`", clause[1])) if clause else set()
    names = settings_table()
    assert {"size", "tile", "diversity", "batch_size", "precision"} <= set(names), names
    for name in names:
        value = getattr(SweepConfig(), name, None) if name in top_level else RenderConfig().model_dump().get(name)
        fragment = {name: value} if name in top_level else {"render": {name: value}}
        try:
            validate(SweepConfig, fragment, f"dream.md's {name}")
        except UserError as exc:
            pytest.fail(str(exc))


def test_figures_md_documents_every_kind_of_figure() -> None:
    """Every figure the CLI draws (--sheet, --map, --circuit, --weights...) and every spec kind is in figures.md."""
    text = (ROOT / "docs" / "figures.md").read_text(encoding="utf-8")
    table = text.split("## Kinds of figure", 1)[1].split("\n## ", 1)[0]
    figure = build_parser()._subparsers._group_actions[0].choices["figure"]
    group = next(g for g in figure._mutually_exclusive_groups if g.required)
    missing = [a.option_strings[0] for a in group._group_actions if f"`{a.option_strings[0]}" not in table]
    assert not missing, f"figures.md's table of kinds leaves out {missing}"
    kinds = re.search(r"kind: \w+ +# (.*)", text)
    assert kinds, "the spec file example names its kinds in a comment"
    from atlas.publish.figures import KINDS

    assert set(re.findall(r"\w+", kinds[1])) >= set(KINDS), kinds[1]


def test_maps_md_settings_table_states_the_defaults() -> None:
    """Each one-key row of maps.md's `map:` settings table gives MapConfig's default (e.g. grid `[10, 20]`)."""
    from atlas.run.config import MapConfig

    text = (ROOT / "docs" / "maps.md").read_text(encoding="utf-8")
    table = text.split("| `map:` key |", 1)[1].split("\n\n", 1)[0]
    checked = 0
    for row in table.splitlines():
        cells = [c.strip() for c in row.split("|")[1:-1]]
        key = re.fullmatch(r"`([a-z_]+)`", cells[0]) if cells else None
        if not key or key[1] not in MapConfig.model_fields or cells[1] == "(required)":
            continue
        field = MapConfig.model_fields[key[1]]
        default = field.get_default(call_default_factory=True)
        assert yaml.safe_load(cells[1].strip("`")) == default, f"maps.md: {key[1]} default {cells[1]}, code {default}"
        checked += 1
    assert checked >= 10
