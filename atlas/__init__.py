"""atlas: render a DeepDream image for every channel of GoogLeNet and publish them as a gallery."""

__version__ = "0.1.0"
