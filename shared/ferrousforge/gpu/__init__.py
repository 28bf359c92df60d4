"""The GPU compute layer: one interface over wgpu (host) and WebGPU (browser), WGSL kernels."""
