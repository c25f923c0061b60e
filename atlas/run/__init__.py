"""The run stage: configs, the sweep over layers x channels, the run folder and its manifest."""
