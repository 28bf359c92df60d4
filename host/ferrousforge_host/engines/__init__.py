"""Native engines. Importing this package registers every engine available here."""

from ferrousforge_host.engines import llamacpp, onnx, wgpu, wgpu_gguf  # noqa: F401  (each registers its Molds)
