"""streamwatch: a transparent reverse proxy that measures LLM token streams."""

__version__ = "0.1.0"
