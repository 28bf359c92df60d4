// Sentence vectors from hidden states h[B, S, D] and mask[B, S]: mean over real tokens (MEAN), the
// first token (CLS), the element-wise max over real tokens (MAX) or the last real token (LAST).
struct Params { B: u32, S: u32, D: u32, pad: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> h: array<f32>;
@group(0) @binding(2) var<storage, read> mask: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let d = gid.x;
  let b = gid.y;
  if (d >= p.D || b >= p.B) { return; }
#if CLS
  out[b * p.D + d] = h[b * p.S * p.D + d];
#else
  var acc = 0.0;
  var n = 0.0;
  var best = -3.0e38;
  var last = 0u;
  for (var s = 0u; s < p.S; s++) {
    let m = mask[b * p.S + s];
    let value = h[(b * p.S + s) * p.D + d];
    acc += m * value;
    n += m;
    if (m > 0.5) { best = max(best, value); last = s; }
  }
#if MEAN
  out[b * p.D + d] = acc / max(n, 1e-9);
#endif
#if MAX
  out[b * p.D + d] = best;
#endif
#if LAST
  out[b * p.D + d] = h[(b * p.S + last) * p.D + d];
#endif
#endif
}
