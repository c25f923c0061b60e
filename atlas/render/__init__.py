"""The render stage: objectives, image transforms and the batched gradient-ascent loop."""
