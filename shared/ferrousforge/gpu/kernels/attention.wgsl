// Multi-head attention over a padded batch: out = softmax(q·kᵀ / sqrt(Dh) + mask) · v for every
// (query, head, sequence). qkv is [B, S, 3·H·Dh], a token's queries, keys and values side by side
// (one product made them); out is [B, S, H·Dh]; mask[B, S] is 1 for real tokens, 0 for padding
// (padded keys get no weight). One workgroup per (query, head, sequence); S ≤ ${MAXS}.
struct Params { B: u32, S: u32, H: u32, Dh: u32, scale: f32, pad0: u32, pad1: u32, pad2: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;
@group(0) @binding(2) var<storage, read> mask: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const WG = 64u;
var<workgroup> score: array<f32, ${MAXS}>;
#include reduce

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_id) l: vec3u, @builtin(workgroup_id) g: vec3u) {
  let i = g.x;
  let h = g.y;
  let b = g.z;
  let width = p.H * p.Dh;
  let row = 3u * width;  // qkv's row: queries, then keys at + width, values at + 2 width
  let qbase = (b * p.S + i) * row + h * p.Dh;
  var best = -3.0e38;
  for (var j = l.x; j < p.S; j += WG) {
    var s = -3.0e38;
    if (mask[b * p.S + j] > 0.5) {
      let kbase = (b * p.S + j) * row + width + h * p.Dh;
      var dot = 0.0;
      for (var d = 0u; d < p.Dh; d++) { dot += qkv[qbase + d] * qkv[kbase + d]; }
      s = dot * p.scale;
    }
    score[j] = s;
    best = max(best, s);
  }
  let m = reduce_max(l.x, best);
  var sum = 0.0;
  for (var j = l.x; j < p.S; j += WG) {
    var e = 0.0;
    if (score[j] > -1.0e38) { e = exp(score[j] - m); }
    score[j] = e;
    sum += e;
  }
  let inv = 1.0 / max(reduce_sum(l.x, sum), 1e-30);
  workgroupBarrier();
  for (var d = l.x; d < p.Dh; d += WG) {
    var acc = 0.0;
    for (var j = 0u; j < p.S; j++) { acc += score[j] * qkv[(b * p.S + j) * row + 2u * width + h * p.Dh + d]; }
    out[(b * p.S + i) * width + h * p.Dh + d] = acc * inv;
  }
}
