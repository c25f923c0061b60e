"""Passes driven by photos (dataset examples, activation maps) and by the model over a run folder (circuits)."""
