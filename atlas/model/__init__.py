"""The model stage: where the graph comes from, the synthetic stand-in, the catalogue, and layer functions."""
