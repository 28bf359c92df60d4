// Rows of src[T, W] into dst at rows base[t] + pos[t] (new keys and values into the KV cache: base[t]
// is the first row of row t's sequence).
struct Params { T: u32, W: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> pos: array<u32>;
@group(0) @binding(3) var<storage, read> base: array<u32>;
@group(0) @binding(4) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let j = gid.x;
  let t = gid.y;
  if (j >= p.W || t >= p.T) { return; }
  dst[(base[t] + pos[t]) * p.W + j] = src[t * p.W + j];
}
