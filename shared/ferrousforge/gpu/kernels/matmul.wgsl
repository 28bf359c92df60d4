// C[M, N] = act(A[M, K] · W[N, K]ᵀ + bias[N]): weights row-major as a Linear layer stores them, or
// with WT as [K, N] (as an ONNX MatMul stores them). act: GELU (erf), TANH or none. With F16 the
// weights are f16 (half the memory and bandwidth; the adapter has shader-f16), products summed in f32.
// 16×16 tiles through workgroup memory; every output sums K in the same order whatever M is, so a
// row's result does not depend on the batch it came in (batch-invariant). W's rows from n0 on (several
// matrices stacked in one buffer). (The GPU decoder's products are linear.wgsl's.)
struct Params { M: u32, N: u32, K: u32, n0: u32, pad0: u32, pad1: u32, pad2: u32, pad3: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<FLOAT>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;

const T = 16u;
var<workgroup> ta: array<array<f32, 16>, 16>;
var<workgroup> tw: array<array<f32, 16>, 16>;

fn erf(x: f32) -> f32 {  // Abramowitz & Stegun 7.1.26, |error| < 1.5e-7
  let s = sign(x);
  let z = abs(x);
  let t = 1.0 / (1.0 + 0.3275911 * z);
  let y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * exp(-z * z);
  return s * y;
}

fn act(x: f32) -> f32 {
#if GELU
  return 0.5 * x * (1.0 + erf(x * 0.70710678118654752));
#else
#if TANH
  return tanh(x);
#else
  return x;
#endif
#endif
}

#if SKINNY
// A few rows (M ≤ 8: decode steps, small batches): one thread an output column for every row, the
// rows' k values shared through workgroup memory 64 at a time. Each output sums k in the same order as
// the tiled kernel below, so both give the same bits: which kernel ran never changes a result.
var<workgroup> rows: array<array<f32, 64>, 8>;

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_id) l: vec3u, @builtin(workgroup_id) g: vec3u) {
  let col = g.x * 64u + l.x;
  let wcol = p.n0 + col;
  var acc = array<f32, 8>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
  for (var k0 = 0u; k0 < p.K; k0 += 64u) {
    let k = k0 + l.x;
    for (var m = 0u; m < p.M; m++) {
      var va = 0.0;
      if (k < p.K) { va = a[m * p.K + k]; }
      rows[m][l.x] = va;
    }
    workgroupBarrier();
    if (col < p.N) {
      let count = min(64u, p.K - k0);
      for (var i = 0u; i < count; i++) {
#if WT
        let vw = f32(w[(k0 + i) * p.N + col]);
#else
        let vw = f32(w[wcol * p.K + k0 + i]);
#endif
        for (var m = 0u; m < p.M; m++) { acc[m] += rows[m][i] * vw; }
      }
    }
    workgroupBarrier();
  }
  if (col < p.N) {
    for (var m = 0u; m < p.M; m++) {
      c[m * p.N + col] = act(acc[m] + bias[col]);
    }
  }
}
#else
@compute @workgroup_size(16, 16)
fn main(@builtin(local_invocation_id) l: vec3u, @builtin(workgroup_id) g: vec3u) {
  let row = g.y * T + l.y;
  let col = g.x * T + l.x;
  let wrow = p.n0 + g.x * T + l.y;
  var acc = 0.0;
  for (var k0 = 0u; k0 < p.K; k0 += T) {
    let k = k0 + l.x;
    var va = 0.0;
    if (row < p.M && k < p.K) { va = a[row * p.K + k]; }
    ta[l.y][l.x] = va;
#if WT
    let wk = k0 + l.y;  // threads side by side read side by side: W[k, n..n+15]
    var vw = 0.0;
    if (col < p.N && wk < p.K) { vw = f32(w[wk * p.N + col]); }
    tw[l.x][l.y] = vw;
#else
    var vw = 0.0;
    if (wrow < p.n0 + p.N && k < p.K) { vw = f32(w[wrow * p.K + k]); }
    tw[l.y][l.x] = vw;
#endif
    workgroupBarrier();
    for (var i = 0u; i < T; i++) {
      acc += ta[l.y][i] * tw[l.x][i];
    }
    workgroupBarrier();
  }
  if (row < p.M && col < p.N) {
    c[row * p.N + col] = act(acc + bias[col]);
  }
}
#endif
