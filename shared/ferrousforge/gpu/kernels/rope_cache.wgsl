// New tokens' queries and keys take their positions, and their keys and values join the KV cache: each
// head of q[T, Hq, D] and k[T, Hkv, D] is RMS-normalised first with QK_NORM (Gemma's per-head norms:
// weights qkn, the queries' D then the keys' D), then rotated (RoPE: the first n_rot dims by pos · base^(-2i / n_rot); NEOX pairs
// dim i with i + n_rot/2, else 2i with 2i + 1, llama.cpp's "normal" mode). Queries in place; keys, and
// values as they are, into the caches at row base[t] + pos[t] (base: the first row of t's sequence).
// One workgroup a (token, head): grid rows 0..Hq are query heads, Hq.. key heads.
struct Params { T: u32, Hq: u32, Hkv: u32, D: u32, n_rot: u32, base: f32, eps: f32, pad: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> pos: array<u32>;
@group(0) @binding(2) var<storage, read> rowbase: array<u32>;
@group(0) @binding(3) var<storage, read_write> q: array<f32>;
@group(0) @binding(4) var<storage, read> k: array<f32>;
@group(0) @binding(5) var<storage, read> v: array<f32>;
@group(0) @binding(6) var<storage, read_write> kcache: array<f32>;
@group(0) @binding(7) var<storage, read_write> vcache: array<f32>;
#if QK_NORM
@group(0) @binding(8) var<storage, read> qkn: array<f32>;  // (8 storage buffers: WebGPU's least limit)
#endif

const WG = 64u;
#include reduce
#include rope_pair

fn load(key: bool, at: u32) -> f32 {
  if (key) { return k[at]; }
  return q[at];
}

fn store(key: bool, at: u32, value: f32) {
  if (key) {
    kcache[at] = value;
  } else {
    q[at] = value;
  }
}

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_id) l: vec3u, @builtin(workgroup_id) g: vec3u) {
  let t = g.x;
  let key = g.y >= p.Hq;
  let h = select(g.y, g.y - p.Hq, key);
  let src = select(t * p.Hq + h, t * p.Hkv + h, key) * p.D;
  let dst = select(src, ((rowbase[t] + pos[t]) * p.Hkv + h) * p.D, key);
  var inv = 1.0;
  let nw = select(0u, p.D, key);  // this head's norm weights in qkn
#if QK_NORM
  var sq = 0.0;
  for (var i = l.x; i < p.D; i += WG) {
    let value = load(key, src + i);
    sq += value * value;
  }
  inv = inverseSqrt(reduce_sum(l.x, sq) / f32(p.D) + p.eps);
#endif
  let half = p.n_rot / 2u;
  for (var i = l.x; i < half; i += WG) {
#if NEOX
    let a = i;
    let b = i + half;
#else
    let a = 2u * i;
    let b = a + 1u;
#endif
    var x0 = load(key, src + a);
    var x1 = load(key, src + b);
#if QK_NORM
    x0 = x0 * inv * qkn[nw + a];
    x1 = x1 * inv * qkn[nw + b];
#endif
    let r = rope_pair(x0, x1, i, p.n_rot, pos[t], p.base);
    store(key, dst + a, r.x);
    store(key, dst + b, r.y);
  }
  for (var i = p.n_rot + l.x; i < p.D; i += WG) {  // dims past n_rot keep their place
    var x0 = load(key, src + i);
#if QK_NORM
    x0 = x0 * inv * qkn[nw + i];
#endif
    store(key, dst + i, x0);
  }
  if (key) {
    for (var i = l.x; i < p.D; i += WG) { vcache[dst + i] = v[src + i]; }
  }
}
