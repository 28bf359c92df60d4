// y = (x [+ r] - mean) / sqrt(var + eps) · gamma + beta over each row of D values; one workgroup a row.
// With RESIDUAL the sum x + r is also written back to x (the stream the next layer adds to).
struct Params { rows: u32, D: u32, eps: f32, pad: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> r: array<f32>;
@group(0) @binding(3) var<storage, read> gamma: array<f32>;
@group(0) @binding(4) var<storage, read> beta: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

const WG = 256u;
#include reduce

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_id) l: vec3u, @builtin(workgroup_id) g: vec3u) {
  let row = g.x + g.y * 65535u;
  if (row >= p.rows) { return; }  // uniform across the workgroup
  let base = row * p.D;
  var sum = 0.0;
  for (var i = l.x; i < p.D; i += WG) {
#if RESIDUAL
    let v = x[base + i] + r[base + i];
    x[base + i] = v;
#else
    let v = x[base + i];
#endif
    sum += v;
  }
  let mean = reduce_sum(l.x, sum) / f32(p.D);
  var sq = 0.0;
  for (var i = l.x; i < p.D; i += WG) {
    let d = x[base + i] - mean;
    sq += d * d;
  }
  let inv = inverseSqrt(reduce_sum(l.x, sq) / f32(p.D) + p.eps);
  for (var i = l.x; i < p.D; i += WG) {
    y[base + i] = (x[base + i] - mean) * inv * gamma[i] + beta[i];
  }
}
