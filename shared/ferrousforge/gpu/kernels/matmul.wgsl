// C[M, N] = act(A[M, K] · W[N, K]ᵀ + bias[N]): weights row-major as a Linear layer stores them, or
// with WT as [K, N] (as an ONNX MatMul stores them). act: GELU (erf), TANH or none. With F16 the
// weights are f16 (half the memory and bandwidth; the adapter has shader-f16), products summed in f32.
// Every output sums K one k at a time in order, whichever kernel below runs, so a row's result does not
// depend on the batch it came in (batch-invariant). W's rows from n0 on (several
// matrices stacked in one buffer). (The GPU decoder's products are linear.wgsl's.)
struct Params { M: u32, N: u32, K: u32, n0: u32, pad0: u32, pad1: u32, pad2: u32, pad3: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<FLOAT>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;

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
// Many rows: a workgroup computes a 64 × 64 tile of C, each of its 256 threads a 4 × 4 block (rows
// 4ty.., columns 4tx..), K walked 16 at a time through workgroup memory: per k a thread reads one vec4
// of A's tile and one of W's for 16 multiply-adds, and each tile of A and W is read from memory once
// for 64 columns or rows of C.
const BK = 16u;
var<workgroup> ta: array<vec4<f32>, 256>;  // [BK][16]: A's tile, k-major, 4 rows to a vec4
var<workgroup> tw: array<vec4<f32>, 256>;  // [BK][16]: W's tile, k-major, 4 columns to a vec4

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) g: vec3u) {
  let tx = t % 16u;
  let ty = t / 16u;
  let m0 = g.y * 64u;
  let c0 = g.x * 64u;
  var acc: array<vec4<f32>, 4>;  // acc[i][j]: C[m0 + 4ty + i, c0 + 4tx + j]
  // what this thread loads of each tile: 4 values of row (or column) `lr` at k offsets lk..lk + 3
  let lr = t / 4u;
  let lk = (t % 4u) * 4u;
  for (var k0 = 0u; k0 < p.K; k0 += BK) {
    for (var j = 0u; j < 4u; j++) {
      let k = k0 + lk + j;
      var va = 0.0;
      if (m0 + lr < p.M && k < p.K) { va = a[(m0 + lr) * p.K + k]; }
      ta[(lk + j) * 16u + lr / 4u][lr % 4u] = va;
#if WT
      // W[k, n]: threads side by side read 4 columns each side by side
      let wk = k0 + t / 16u;
      let wn = c0 + 4u * tx + j;
      var vw = 0.0;
      if (wk < p.K && wn < p.N) { vw = f32(w[wk * p.N + wn]); }
      tw[(t / 16u) * 16u + tx][j] = vw;
#else
      let wn = c0 + lr;
      var vw = 0.0;
      if (wn < p.N && k < p.K) { vw = f32(w[(p.n0 + wn) * p.K + k]); }
      tw[(lk + j) * 16u + lr / 4u][lr % 4u] = vw;
#endif
    }
    workgroupBarrier();
    for (var i = 0u; i < BK; i++) {
      let va = ta[i * 16u + ty];
      let vw = tw[i * 16u + tx];
      acc[0] += va.x * vw;
      acc[1] += va.y * vw;
      acc[2] += va.z * vw;
      acc[3] += va.w * vw;
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i++) {
    let row = m0 + 4u * ty + i;
    for (var j = 0u; j < 4u; j++) {
      let col = c0 + 4u * tx + j;
      if (row < p.M && col < p.N) { c[row * p.N + col] = act(acc[i][j] + bias[col]); }
    }
  }
}
#endif
