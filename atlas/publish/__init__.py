"""The publish stage: the static gallery and teaching figures, read from a run folder."""
