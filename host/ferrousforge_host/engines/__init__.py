"""Native engines. Importing this package registers every engine available here."""

from ferrousforge_host.engines import llamacpp  # noqa: F401  (registers the GGUF Mold)
