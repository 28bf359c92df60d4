// Decoder attention over a KV cache, with grouped-query heads and an optional sliding window:
// query t (at position pos[t]) of head h attends to its sequence's cached keys 0..pos[t] (only the last
// WINDOW of them when WINDOW > 0) of kv head h / (Hq / Hkv), its sequence's keys starting at cache row
// base[t]. q, out: [T, Hq, D]; kcache, vcache: [S, Hkv, D]; D a multiple of 4, ≤ 256.
// One workgroup a query and head, keys taken 64 at a time with a running max and sum (online softmax).
// Written for a decode step, where a handful of workgroups must cover the whole cache: the 256 threads
// share every key's work instead of one thread walking a key's D values alone. Scores: 4 threads a key,
// reading its row 16 bytes each side by side; values: each thread one group of 4 output dims and every
// 4th key of the block. So a thread issues a few independent loads a block, not hundreds in a row. The
// order of every sum is fixed by the block and D alone, the same for every query whatever else is in
// the batch, so a sequence's result does not depend on its batch.
struct Params { T: u32, Hq: u32, Hkv: u32, D: u32, scale: f32, window: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> kcache: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> vcache: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> pos: array<u32>;
@group(0) @binding(5) var<storage, read> base: array<u32>;
@group(0) @binding(6) var<storage, read_write> out: array<vec4<f32>>;

const BLOCK = 64u;  // keys a round
const SPLIT = 4u;  // threads a key's score; key groups of the values
var<workgroup> qs: array<vec4<f32>, 64>;  // the query (D / 4 ≤ 64)
var<workgroup> part: array<f32, 256>;  // the scores' partial dot products, 4 a key
var<workgroup> s: array<f32, 64>;  // the block's scores
var<workgroup> acc_all: array<vec4<f32>, 256>;  // the key groups' outputs, summed at the end
var<workgroup> sums: array<f32, 4>;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_id) l: vec3u, @builtin(workgroup_id) g: vec3u) {
  let tid = l.x;
  let t = g.x;
  let h = g.y;
  let kvh = h / (p.Hq / p.Hkv);
  let d4 = p.D / 4u;
  let qrow = (t * p.Hq + h) * d4;
  let row0 = base[t];
  let last = pos[t];
  var first = 0u;
  if (p.window > 0u && last + 1u > p.window) { first = last + 1u - p.window; }
  if (tid < d4) { qs[tid] = q[qrow + tid]; }
  let key = tid / SPLIT;  // scores: this thread's key of the block
  let col = tid % BLOCK;  // values: this thread's 4 output dims
  let group = tid / BLOCK;  // and its keys: group, group + 4, ... of the block
  var acc = vec4<f32>(0.0);
  var m = -3.4e38;
  var sum = 0.0;
  workgroupBarrier();
  for (var k0 = first; k0 <= last; k0 += BLOCK) {
    let count = min(BLOCK, last + 1u - k0);
    var partial = 0.0;
    if (key < count) {
      let krow = ((row0 + k0 + key) * p.Hkv + kvh) * d4;
      for (var c = tid % SPLIT; c < d4; c += SPLIT) { partial += dot(qs[c], kcache[krow + c]); }
    }
    part[tid] = partial;
    workgroupBarrier();
    if (tid < BLOCK) {
      var score = -3.4e38;
      if (tid < count) {
        score = (part[SPLIT * tid] + part[SPLIT * tid + 1u] + part[SPLIT * tid + 2u] + part[SPLIT * tid + 3u]) * p.scale;
      }
      s[tid] = score;
    }
    workgroupBarrier();
    var new_m = m;
    for (var j = 0u; j < count; j++) { new_m = max(new_m, s[j]); }
    let keep = exp(m - new_m);
    sum *= keep;
    acc *= keep;
    if (col < d4) {
      for (var j = group; j < count; j += SPLIT) {
        let w = exp(s[j] - new_m);
        sum += w;
        acc += w * vcache[((row0 + k0 + j) * p.Hkv + kvh) * d4 + col];
      }
    }
    m = new_m;
    workgroupBarrier();  // part and s are rewritten next block
  }
  acc_all[tid] = acc;
  if (col == 0u) { sums[group] = sum; }
  workgroupBarrier();
  if (tid < d4) {
    let total = acc_all[tid] + acc_all[BLOCK + tid] + acc_all[2u * BLOCK + tid] + acc_all[3u * BLOCK + tid];
    out[qrow + tid] = total / (sums[0] + sums[1] + sums[2] + sums[3]);
  }
}
