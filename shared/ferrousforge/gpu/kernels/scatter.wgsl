// Rows of src[T, W] into dst at rows base[t] + pos[t] (new keys and values into the KV cache: base[t]
// is the first row of row t's sequence). With TWO the grid's second layer copies src2 into dst2 (keys
// and values in one dispatch).
struct Params { T: u32, W: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> pos: array<u32>;
@group(0) @binding(3) var<storage, read> base: array<u32>;
@group(0) @binding(4) var<storage, read_write> dst: array<f32>;
#if TWO
@group(0) @binding(5) var<storage, read> src2: array<f32>;
@group(0) @binding(6) var<storage, read_write> dst2: array<f32>;
#endif

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let j = gid.x;
  let t = gid.y;
  if (j >= p.W || t >= p.T) { return; }
  let at = (base[t] + pos[t]) * p.W + j;
#if TWO
  if (gid.z == 1u) {
    dst2[at] = src2[t * p.W + j];
    return;
  }
#endif
  dst[at] = src[t * p.W + j];
}
