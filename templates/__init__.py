"""The gallery's Jinja2 templates and static files, installed as the package atlas.templates (see pyproject.toml)."""
