// The index of the largest of each row's N values (the first on ties, as numpy's argmax): greedy
// decoding reads back 4 bytes a sequence instead of the whole vocabulary (with VALUE, 8: the index and
// the value, to compare slices of a vocabulary). One workgroup a row.
struct Params { N: u32, pad0: u32, pad1: u32, pad2: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

var<workgroup> best: array<f32, 256>;
var<workgroup> at: array<u32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_id) l: vec3u, @builtin(workgroup_id) g: vec3u) {
  let base = g.x * p.N;
  var b = -3.4e38;
  var a = 0xFFFFFFFFu;
  for (var i = l.x; i < p.N; i += 256u) {
    let v = x[base + i];
    if (v > b) { b = v; a = i; }  // strided: the first maximum of this thread's share
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
#if VALUE
  if (l.x == 0u) {
    out[2u * g.x] = at[0];
    out[2u * g.x + 1u] = bitcast<u32>(best[0]);
  }
#else
  if (l.x == 0u) { out[g.x] = at[0]; }
#endif
}
