"""FerrousForge's shared model layer: pure Python, importable natively and under Pyodide."""

from typing import TYPE_CHECKING, Any

from ferrousforge.errors import (
    BadRequest,
    ForgeError,
    ModelNotFound,
    NotSupported,
)
from ferrousforge.mold import Capability, Mold, register_mold, resolve_mold
from ferrousforge.names import ModelName
from ferrousforge.options import Options

if TYPE_CHECKING:
    from ferrousforge.client import AsyncClient, Client

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """The HTTP clients load on first use: urllib.request costs ~0.4 s of a browser page's start."""
    if name in ("Client", "AsyncClient"):
        from ferrousforge import client

        return getattr(client, name)
    raise AttributeError(f"module 'ferrousforge' has no attribute {name!r}")


__all__ = [
    "AsyncClient",
    "BadRequest",
    "Capability",
    "Client",
    "ForgeError",
    "ModelName",
    "ModelNotFound",
    "Mold",
    "NotSupported",
    "Options",
    "__version__",
    "register_mold",
    "resolve_mold",
]
