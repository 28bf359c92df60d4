// Decoder attention over a KV cache, with grouped-query heads and an optional sliding window:
// query t (at position pos[t]) of head h attends to its sequence's cached keys 0..pos[t] (only the last
// WINDOW of them when WINDOW > 0) of kv head h / (Hq / Hkv), its sequence's keys starting at cache row
// base[t]. q, out: [T, Hq, D]; kcache, vcache: [S, Hkv, D].
// Keys are taken 64 at a time with a running max and sum (online softmax), in the same order for every
// query whatever else is in the batch, so a sequence's result does not depend on its batch. D ≤ 256.
struct Params { T: u32, Hq: u32, Hkv: u32, D: u32, scale: f32, window: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> kcache: array<f32>;
@group(0) @binding(3) var<storage, read> vcache: array<f32>;
@group(0) @binding(4) var<storage, read> pos: array<u32>;
@group(0) @binding(5) var<storage, read> base: array<u32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;

const WG = 64u;
var<workgroup> s: array<f32, 64>;
#include reduce

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_id) l: vec3u, @builtin(workgroup_id) g: vec3u) {
  let t = g.x;
  let h = g.y;
  let kvh = h / (p.Hq / p.Hkv);
  let qrow = (t * p.Hq + h) * p.D;
  let row0 = base[t];
  let last = pos[t];
  var first = 0u;
  if (p.window > 0u && last + 1u > p.window) { first = last + 1u - p.window; }
  var acc = array<f32, 4>(0.0, 0.0, 0.0, 0.0);  // this thread's output dims: l.x, l.x + 64, ...
  var m = -3.4e38;
  var sum = 0.0;
  for (var k0 = first; k0 <= last; k0 += WG) {
    let key = k0 + l.x;
    var score = -3.4e38;
    if (key <= last) {
      let krow = ((row0 + key) * p.Hkv + kvh) * p.D;
      var dot = 0.0;
      for (var d = 0u; d < p.D; d++) { dot += q[qrow + d] * kcache[krow + d]; }
      score = dot * p.scale;
    }
    s[l.x] = score;
    let new_m = max(m, reduce_max(l.x, score));  // its barriers also publish s
    let keep = exp(m - new_m);
    sum *= keep;
    for (var i = 0u; i < 4u; i++) { acc[i] *= keep; }
    let count = min(WG, last + 1u - k0);
    for (var j = 0u; j < count; j++) {
      let w = exp(s[j] - new_m);
      sum += w;
      let vrow = ((row0 + k0 + j) * p.Hkv + kvh) * p.D;
      for (var i = 0u; i < 4u; i++) {
        let d = l.x + i * WG;
        if (d < p.D) { acc[i] += w * vcache[vrow + d]; }
      }
    }
    m = new_m;
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i++) {
    let d = l.x + i * WG;
    if (d < p.D) { out[qrow + d] = acc[i] / sum; }
  }
}
