// Per row of D values: L2 normalisation (L2), softmax (SOFTMAX), or RMSNorm with weights (RMS; with
// ONE_PLUS the weights are stored as w - 1, as Gemma's are). One workgroup a row, in place or into y;
// with ACCUM an RMSNorm is added to y (a post-norm onto the residual stream).
struct Params { rows: u32, D: u32, eps: f32, pad: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

const WG = 256u;
#include reduce

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_id) l: vec3u, @builtin(workgroup_id) g: vec3u) {
  let row = g.x + g.y * 65535u;
  if (row >= p.rows) { return; }
  let base = row * p.D;
#if SOFTMAX
  var m = -3.0e38;
  for (var i = l.x; i < p.D; i += WG) { m = max(m, x[base + i]); }
  m = reduce_max(l.x, m);
  var sum = 0.0;
  for (var i = l.x; i < p.D; i += WG) { sum += exp(x[base + i] - m); }
  let inv = 1.0 / reduce_sum(l.x, sum);
  for (var i = l.x; i < p.D; i += WG) { y[base + i] = exp(x[base + i] - m) * inv; }
#else
  var sq = 0.0;
  for (var i = l.x; i < p.D; i += WG) { sq += x[base + i] * x[base + i]; }
  sq = reduce_sum(l.x, sq);
#if L2
  let inv = 1.0 / max(sqrt(sq), 1e-12);
  for (var i = l.x; i < p.D; i += WG) { y[base + i] = x[base + i] * inv; }
#endif
#if RMS
  let inv = inverseSqrt(sq / f32(p.D) + p.eps);
  for (var i = l.x; i < p.D; i += WG) {
#if ONE_PLUS
    y[base + i] = x[base + i] * inv * (1.0 + w[i]);
#else
#if ACCUM
    y[base + i] += x[base + i] * inv * w[i];
#else
    y[base + i] = x[base + i] * inv * w[i];
#endif
#endif
  }
#endif
#endif
}
