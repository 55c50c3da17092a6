"""persona-proxy: an OpenAI-compatible gateway that serves each persona from its own provider."""

__version__ = "0.1.0"
