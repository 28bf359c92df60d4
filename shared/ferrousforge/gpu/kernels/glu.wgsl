// Gated feed-forward activation: out = act(gate) · up, act SiLU (Llama: SwiGLU) or, with GELU, the
// tanh-approximated GELU (Gemma: GeGLU).
struct Params { n: u32, pad0: u32, pad1: u32, pad2: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> gate: array<f32>;
@group(0) @binding(2) var<storage, read> up: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let i = gid.x + gid.y * groups.x * 256u;
  if (i >= p.n) { return; }
  let g = gate[i];
#if GELU
  let a = 0.5 * g * (1.0 + tanh(0.7978845608028654 * (g + 0.044715 * g * g * g)));
#else
  let a = g / (1.0 + exp(-g));
#endif
  out[i] = a * up[i];
}
