// Token embeddings: out[t] = table[ids[t]] · scale (Gemma scales by sqrt(n_embd); others by 1).
struct Params { T: u32, D: u32, scale: f32, pad: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read> table: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let d = gid.x;
  let t = gid.y;
  if (d >= p.D || t >= p.T) { return; }
  out[t * p.D + d] = table[ids[t] * p.D + d] * p.scale;
}
