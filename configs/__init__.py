"""The shipped sweep configs (and figures/ specs), installed as the package atlas.configs (see pyproject.toml)."""
