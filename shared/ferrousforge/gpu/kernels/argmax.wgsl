// The largest of each row's N values and its index (the first on ties, as numpy's argmax): greedy
// decoding reads back 8 bytes a sequence instead of the whole vocabulary. Workgroup (c, r) takes chunk
// c (CH values) of row r and writes (index, value bits) at r · stride + offset + c, the index counted
// from `first` (a vocabulary slice's first token); with PAIRS the input is such results, in index
// order, reduced once more. CHAIN (the last reduction of a chained decode pass): the winner is also the
// row's next input, ids[r] = index and pos[r] + 1, and joins the pass's tokens at step · rows + r.
struct Params { N: u32, CH: u32, first: u32, offset: u32, stride: u32, step: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<uniform> p: Params;
#if PAIRS
@group(0) @binding(1) var<storage, read> x: array<u32>;
#else
@group(0) @binding(1) var<storage, read> x: array<f32>;
#endif
@group(0) @binding(2) var<storage, read_write> out: array<u32>;
#if CHAIN
@group(0) @binding(3) var<storage, read_write> ids: array<u32>;
@group(0) @binding(4) var<storage, read_write> pos: array<u32>;
@group(0) @binding(5) var<storage, read_write> tokens: array<u32>;
#endif

var<workgroup> best: array<f32, 256>;
var<workgroup> at: array<u32, 256>;

@compute @workgroup_size(256)
fn main(
  @builtin(local_invocation_id) l: vec3u,
  @builtin(workgroup_id) g: vec3u,
  @builtin(num_workgroups) groups: vec3u,
) {
  let row = g.y;
  let end = min(p.N, (g.x + 1u) * p.CH);
  var b = -3.4e38;
  var a = 0xFFFFFFFFu;
  for (var i = g.x * p.CH + l.x; i < end; i += 256u) {
#if PAIRS
    let v = bitcast<f32>(x[2u * (row * p.N + i) + 1u]);
    let index = x[2u * (row * p.N + i)];
#else
    let v = x[row * p.N + i];
    let index = p.first + i;
#endif
    if (v > b) { b = v; a = index; }  // strided, indices rising: the first maximum of this thread's share
  }
  best[l.x] = b;
  at[l.x] = a;
  workgroupBarrier();
  for (var s = 128u; s > 0u; s >>= 1u) {
    if (l.x < s) {
      let ob = best[l.x + s];
      let oa = at[l.x + s];
      if (ob > best[l.x] || (ob == best[l.x] && oa < at[l.x])) {
        best[l.x] = ob;
        at[l.x] = oa;
      }
    }
    workgroupBarrier();
  }
  if (l.x == 0u) {
    let slot = row * p.stride + p.offset + g.x;
    out[2u * slot] = at[0];
    out[2u * slot + 1u] = bitcast<u32>(best[0]);
#if CHAIN
    ids[row] = at[0];
    pos[row] = pos[row] + 1u;
    tokens[p.step * groups.y + row] = at[0];
#endif
  }
}
