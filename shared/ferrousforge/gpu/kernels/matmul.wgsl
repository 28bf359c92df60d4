// C[M, N] = act(A[M, K] · W[N, K]ᵀ + bias[N]): weights row-major as a Linear layer stores them, or
// with WT as [K, N] (as an ONNX MatMul stores them). act: GELU (erf), TANH or none. With F16 the
// weights are f16 (half the memory and bandwidth; the adapter has shader-f16), products summed in f32.
// Every output sums K one k at a time in order, whichever kernel below runs, so a row's result does not
// depend on the batch it came in (batch-invariant). W's rows from n0 on (several
// matrices stacked in one buffer). (The GPU decoder's products are linear.wgsl's.)
struct Params { M: u32, N: u32, K: u32, n0: u32, pad0: u32, pad1: u32, pad2: u32, pad3: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
#if W4
@group(0) @binding(2) var<storage, read> w: array<vec4<FLOAT>>;  // WT with N a multiple of 4: runs of 4 columns

fn w_at(i: u32) -> f32 { return f32(w[i / 4u][i % 4u]); }
#else
@group(0) @binding(2) var<storage, read> w: array<FLOAT>;

fn w_at(i: u32) -> f32 { return f32(w[i]); }
#endif
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
  return tanh(clamp(x, -15.0, 15.0));  // tanh from exp overflows past ~88 on some backends (NaN)
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
  // (the rows written out: an array indexed by a loop counter can leave the registers)
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
        let vw = w_at((k0 + i) * p.N + col);
#else
        let vw = w_at(wcol * p.K + k0 + i);
#endif
#for m 8
        if (${m}u < p.M) { acc[${m}] += rows[${m}][i] * vw; }
#endfor
      }
    }
    workgroupBarrier();
  }
  if (col < p.N) {
#for m 8
    if (${m}u < p.M) { c[${m}u * p.N + col] = act(acc[${m}] + bias[col]); }
#endfor
  }
}
#else
// Many rows: a workgroup computes a BM × BN tile of C, each of its threads a TM × TN block, K walked
// BK at a time through workgroup memory: per k a thread reads TM/4 vec4s of A's tile and TN/4 of W's
// for TM·TN multiply-adds, and each tile of A and W is read from memory once for BN columns or BM rows
// of C. A thread's rows are the vec4 groups ty, ty + MT, ... and its columns tx, tx + NT, ... so
// neighbouring threads read neighbouring vec4s. The tile is the device's measured choice (ops.py's
// MatmulTile, tune.py); every tile sums k in the same order.
const BM = ${BM}u;
const BN = ${BN}u;
const BK = ${BK}u;
const TM4 = ${TM4}u;  // TM / 4
const TN4 = ${TN4}u;
const MT = ${MT}u;  // threads along rows: BM / TM
const NT = ${NT}u;  // threads along columns: BN / TN
const THREADS = ${THREADS}u;
var<workgroup> ta: array<vec4<f32>, ${TA}>;  // [BK][BM / 4]: A's tile, k-major, 4 rows to a vec4
var<workgroup> tw: array<vec4<f32>, ${TW}>;  // [BK][BN / 4]: W's tile, k-major, 4 columns to a vec4
const LA = ${LA}u;  // vec4s of A's tile each thread fills: BM · BK / 4 / THREADS
const LW = ${LW}u;  // and of W's

// Slot i of A's tile at k0: a vec4 of 4 rows at one k, k fastest along i (neighbouring threads read
// neighbouring k); zeros outside A. Whole vec4s only: a store to one component of a shared vec4 may
// write all four (WGSL's memory model; D3D12 backends do), so two invocations never fill one vec4.
fn a_slot(i: u32, k0: u32, m0: u32) -> vec4<f32> {
  let q = i / BK;
  let k = k0 + i % BK;
  var va = vec4<f32>(0.0);
#for e 4
  if (m0 + 4u * q + ${e}u < p.M && k < p.K) { va[${e}] = a[(m0 + 4u * q + ${e}u) * p.K + k]; }
#endfor
  return va;
}

// where slot i of A's tile goes in ta
fn a_place(i: u32) -> u32 {
  return (i % BK) * (BM / 4u) + i / BK;
}

#if WT
// Slot i of W's tile at k0, W [K, N]: a run of 4 columns of one k, columns fastest along i; it goes to
// tw[i] (its k row, then its vec4 of columns)
fn w_slot(i: u32, k0: u32, c0: u32) -> vec4<f32> {
  let wk = k0 + i / (BN / 4u);
  let wq = i % (BN / 4u);
  var vw = vec4<f32>(0.0);
#if W4
  if (wk < p.K && c0 + 4u * wq < p.N) { vw = vec4<f32>(w[(wk * p.N + c0) / 4u + wq]); }  // one load
#else
#for j 4
  if (wk < p.K && c0 + 4u * wq + ${j}u < p.N) { vw[${j}] = w_at(wk * p.N + c0 + 4u * wq + ${j}u); }
#endfor
#endif
  return vw;
}

fn w_place(i: u32) -> u32 {
  return i;
}
#else
// Slot i of W's tile at k0, W [N, K]: a vec4 of 4 columns at one k, as A's
fn w_slot(i: u32, k0: u32, c0: u32) -> vec4<f32> {
  let q = i / BK;
  let k = k0 + i % BK;
  var vw = vec4<f32>(0.0);
#for e 4
  if (c0 + 4u * q + ${e}u < p.N && k < p.K) { vw[${e}] = w_at((p.n0 + c0 + 4u * q + ${e}u) * p.K + k); }
#endfor
  return vw;
}

fn w_place(i: u32) -> u32 {
  return (i % BK) * (BN / 4u) + i / BK;
}
#endif

@compute @workgroup_size(${THREADS})
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) g: vec3u) {
  let tx = t % NT;
  let ty = t / NT;
  let m0 = g.y * BM;
  let c0 = g.x * BN;
  // acc[r * TN4 + j]: C[m0 + 4(ty + (r / 4) MT) + r % 4, c0 + 4(tx + j NT) + 0..3]
  var acc: array<vec4<f32>, ${ACC}>;
#if PREFETCH
  // the next tiles' values, loaded into registers while this tile is summed (written out: SwiftShader
  // gives up compiling this form unless W's runs of 4 columns are single loads, W4; it never runs it,
  // since a software adapter keeps the default tiling)
#for j LA
  var pa${j} = a_slot(t + ${j}u * THREADS, 0u, m0);
#endfor
#for j LW
  var pw${j} = w_slot(t + ${j}u * THREADS, 0u, c0);
#endfor
#endif
  for (var k0 = 0u; k0 < p.K; k0 += BK) {
#if PREFETCH
#for j LA
    ta[a_place(t + ${j}u * THREADS)] = pa${j};
#endfor
#for j LW
    tw[w_place(t + ${j}u * THREADS)] = pw${j};
#endfor
    workgroupBarrier();
    if (k0 + BK < p.K) {
#for j LA
      pa${j} = a_slot(t + ${j}u * THREADS, k0 + BK, m0);
#endfor
#for j LW
      pw${j} = w_slot(t + ${j}u * THREADS, k0 + BK, c0);
#endfor
    }
#else
    for (var i = t; i < LA * THREADS; i += THREADS) { ta[a_place(i)] = a_slot(i, k0, m0); }
    for (var i = t; i < LW * THREADS; i += THREADS) { tw[w_place(i)] = w_slot(i, k0, c0); }
    workgroupBarrier();
#endif
    // the tile's k written out (#for), each with its own block: the accumulators' indices are constants
#for i BK
    {
      let va0 = ta[${i}u * (BM / 4u) + ty];
      let vw0 = tw[${i}u * (BN / 4u) + tx];
      acc[0] += va0.x * vw0;
      acc[TN4] += va0.y * vw0;
      acc[2u * TN4] += va0.z * vw0;
      acc[3u * TN4] += va0.w * vw0;
#if TN8
      let vw1 = tw[${i}u * (BN / 4u) + tx + NT];
      acc[1] += va0.x * vw1;
      acc[3] += va0.y * vw1;
      acc[5] += va0.z * vw1;
      acc[7] += va0.w * vw1;
#endif
#if TM8
      let va1 = ta[${i}u * (BM / 4u) + ty + MT];
      acc[4u * TN4] += va1.x * vw0;
      acc[5u * TN4] += va1.y * vw0;
      acc[6u * TN4] += va1.z * vw0;
      acc[7u * TN4] += va1.w * vw0;
#if TN8
      acc[9] += va1.x * vw1;
      acc[11] += va1.y * vw1;
      acc[13] += va1.z * vw1;
      acc[15] += va1.w * vw1;
#endif
#endif
    }
#endfor
    workgroupBarrier();
  }
#for r TM
#for j TN4
  put(m0 + 4u * (ty + ${r}u / 4u * MT) + ${r}u % 4u, c0 + 4u * (tx + ${j}u * NT), acc[${r}u * TN4 + ${j}u]);
#endfor
#endfor
}

// C[row, col .. col + 3] = act(v + bias), those inside C
fn put(row: u32, col: u32, v: vec4<f32>) {
#for e 4
  if (row < p.M && col + ${e}u < p.N) { c[row * p.N + col + ${e}u] = act(v[${e}] + bias[col + ${e}u]); }
#endfor
}
#endif
