"""FerrousForge's shared model layer: pure Python, importable natively and under Pyodide."""

from ferrousforge.client import AsyncClient, Client
from ferrousforge.errors import (
    BadRequest,
    ForgeError,
    ModelNotFound,
    NotSupported,
)
from ferrousforge.mold import Capability, Mold, register_mold, resolve_mold
from ferrousforge.names import ModelName
from ferrousforge.options import Options

__version__ = "0.1.0"

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
