// The 128 largest entries of each chunk of 1024 in a row, sorted (largest first; equal values: lower
// index first), as (index, value bits) pairs: a row's candidates for sampling, found in rounds (the
// vocabulary's logits, then the candidates of the round before) so a sampled token reads back 1 KB
// instead of the vocabulary. With PAIRS the input is an earlier round's pairs; else f32 values whose
// index is their position plus `first` (a slice of the vocabulary). A bitonic sort in workgroup memory.
struct Params { N: u32, stride: u32, first: u32, offset: u32 }  // entries a row; output pairs a row; ...
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

const CHUNK = 1024u;
const K = 128u;
var<workgroup> v: array<f32, 1024>;
var<workgroup> ix: array<u32, 1024>;

fn ranks_before(a: u32, b: u32) -> bool {
  return v[a] > v[b] || (v[a] == v[b] && ix[a] < ix[b]);
}

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_id) l: vec3u, @builtin(workgroup_id) g: vec3u) {
  let chunk = g.x;
  let row = g.y;
  for (var j = l.x; j < CHUNK; j += 256u) {
    let i = chunk * CHUNK + j;
    if (i < p.N) {
#if PAIRS
      let at = (row * p.N + i) * 2u;
      ix[j] = x[at];
      v[j] = bitcast<f32>(x[at + 1u]);
#else
      ix[j] = p.first + i;
      v[j] = bitcast<f32>(x[row * p.N + i]);
#endif
    } else {
      ix[j] = 0xFFFFFFFFu;  // padding: ranks last, dropped by the reader
      v[j] = -3.4e38;
    }
  }
  workgroupBarrier();
  for (var size = 2u; size <= CHUNK; size <<= 1u) {
    for (var stride = size >> 1u; stride > 0u; stride >>= 1u) {
      for (var t = l.x; t < CHUNK / 2u; t += 256u) {
        let a = 2u * stride * (t / stride) + t % stride;
        let b = a + stride;
        // blocks alternate direction until the last merge, which puts the whole chunk best first
        let swap = select(ranks_before(a, b), ranks_before(b, a), (a & size) == 0u);
        if (swap) {
          let tv = v[a];
          v[a] = v[b];
          v[b] = tv;
          let ti = ix[a];
          ix[a] = ix[b];
          ix[b] = ti;
        }
      }
      workgroupBarrier();
    }
  }
  for (var j = l.x; j < K; j += 256u) {
    let o = row * p.stride + p.offset + chunk * K + j;
    out[2u * o] = ix[j];
    out[2u * o + 1u] = bitcast<u32>(v[j]);
  }
}
