// Gated feed-forward activation: out = act(gate) · up, act SiLU (Llama: SwiGLU) or, with GELU_TANH,
// the tanh-approximated GELU (Gemma: GeGLU).
struct Params { n: u32, pad0: u32, pad1: u32, pad2: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> gate: array<f32>;
@group(0) @binding(2) var<storage, read> up: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

#include glu_act

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let i = gid.x + gid.y * groups.x * 256u;
  if (i >= p.n) { return; }
  out[i] = glu_act(gate[i]) * up[i];
}
