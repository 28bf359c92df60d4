// f32 → f16, two values an invocation (a 4-byte write: no two invocations share a word). n is even.
struct Params { pairs: u32, pad0: u32, pad1: u32, pad2: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec2<f32>>;
@group(0) @binding(2) var<storage, read_write> y: array<vec2<f16>>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) n: vec3u) {
  let i = gid.x + gid.y * n.x * 256u;
  if (i < p.pairs) { y[i] = vec2<f16>(x[i]); }
}
