"""The server's log on stderr (and its runner processes')."""

from __future__ import annotations

import logging

DEBUG_ENV = "FERROUSFORGE_DEBUG"  # read by runner processes too: the server's setting, passed down


def configure_logging(debug: bool) -> None:
    """FerrousForge's log lines on stderr, as a server prints them: each request's access line, model
    loads and unloads, warnings; with ``debug`` (OLLAMA_DEBUG=1) its debug lines too."""
    logger = logging.getLogger("ferrousforge")
    if any(getattr(h, "ferrousforge", False) for h in logger.handlers):
        return
    handler = logging.StreamHandler()
    handler.ferrousforge = True  # type: ignore[attr-defined]
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s", "%Y-%m-%dT%H:%M:%S")
    )
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.INFO)
    logger.propagate = False
