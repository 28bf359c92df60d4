// y[N] = W[N, K] · x[K] + bias[N]: one workgroup per output row, vec4 loads, a tree reduction.
// K must be a multiple of 4 (callers pad).
struct Params { N: u32, K: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

const WG = 256u;
#include reduce

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_id) l: vec3u, @builtin(workgroup_id) g: vec3u) {
  let row = g.x + g.y * 65535u;
  if (row >= p.N) { return; }
  let k4 = p.K / 4u;
  var acc = 0.0;
  for (var i = l.x; i < k4; i += WG) { acc += dot(w[row * k4 + i], x[i]); }
  let total = reduce_sum(l.x, acc);
  if (l.x == 0u) { y[row] = total + bias[row]; }
}
