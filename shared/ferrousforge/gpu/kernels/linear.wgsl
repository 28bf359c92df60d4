// The GPU decoder's matrix products: C[M, N] = X[M, K] · W[n0 : n0 + N, K]ᵀ, W row-major as GGUF keeps
// it (f16 where the adapter has shader-f16; with Q8 8-bit values and a scale a block of 32, as
// quant8.wgsl writes them; with Q4 4-bit values, a scale and a min a block of 32, as quant4.wgsl
// writes them; K then a multiple of 32), K a multiple of 4. Written for memory bandwidth, since a
// decode step reads every weight once for one row: a workgroup takes WROWS rows of W and up to 8 rows
// of X; LANES threads share each W row (LANES × WROWS = 256: 16 × 16 on a CPU adapter, 32 × 8 on a
// GPU, ops.linear_lanes), reading it 4 values at a time side by side (coalesced), each summing every
// LANES-th group of 4, then the LANES added in order. That order is the same for every M, row and
// variant below: a row's result never depends on what else is in the pass (batch-invariant), and a
// prompt (many rows, several workgroups along y) gives the bits a decode step would.
// NORM: X's rows are RMS-normalised first (weights nw): C = (X ⊙ nw) · Wᵀ / rms(X), the sum of squares
// gathered in the same pass over X and reduced by the same tree. SPLIT: columns [0, N1), [N1, N1 + N2)
// and the rest go to C, C2 and C3 (queries, keys and values from one stacked matrix). GLU: W holds [gate; up] (2N rows) and C = act(X ·
// gateᵀ) · (X · upᵀ) (SwiGLU, or with GELU_TANH Gemma's GeGLU). ACCUM: C += the product (a residual).
// ROPE (with SPLIT, Llama): queries and keys rotated in llama.cpp's "normal" mode (dims 2i and 2i + 1
// of a head of D, the first n_rot dims, by pos · theta^(-2i / n_rot)), their pairs being neighbouring
// rows of W, swapped through workgroup memory; keys and values go straight into the KV caches C2 and
// C3 (f16, a pair a word, written by the pair's even column) at row base[m] + pos[m]: the rotation
// and the cache write cost no dispatch of their own.
// BIAS (with NORM, Qwen2): nw holds [nw; bias] and each column's bias is added after the norm.
// FACTORS (with ROPE and NORM, Llama 3): each pair's angle is divided by its frequency factor, held in
// nw from scalar index p.factors (after the norm's weights and any biases).
// RESIDUAL (with NORM, Gemma): X is the residual stream before its pending post-norm, the previous
// product O: the input is X + rms_norm(O) ⊙ pw (nw holds [nw; pw]), O's RMS reduced first by all 256
// threads in a fixed order, the sum staged in workgroup memory a tile at a time (computed once, not by
// each weight row; a decode step's one row of up to 1024 values at once, else 32 groups of 4 a row,
// each lane summing its groups in the same order either way); the first column of workgroups writes
// it to XOUT, the stream's next buffer: the post-norm costs no dispatch of its own. O may come as p.parts shares a row
// ([M, parts, K], added in order: causal.wgsl's OPROJ heads); PLAIN (Llama): no post-norm, the input is
// X + O.
struct Params {
  M: u32, N: u32, K: u32, n0: u32, N1: u32, N2: u32, eps: f32, D: u32, n_rot: u32, theta: f32,
  factors: u32, parts: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
#if Q8
@group(0) @binding(2) var<storage, read> w: array<u32>;  // quant8.wgsl's rows: K / 4 words, K / 32 scales
#else
#if Q4
@group(0) @binding(2) var<storage, read> w: array<u32>;  // quant4.wgsl's rows: K / 8 words, K / 32 pairs
#else
@group(0) @binding(2) var<storage, read> w: array<vec4<FLOAT>>;
#endif
#endif

#include weights
#if NORM
@group(0) @binding(3) var<storage, read> nw: array<vec4<f32>>;

// the value at scalar index e of nw, past the norm's weights (biases, frequency factors)
fn norm_extra(e: u32) -> f32 {
  return nw[e / 4u][e % 4u];
}
#endif
@group(0) @binding(4) var<storage, read_write> c: array<f32>;
#if SPLIT
#if ROPE
@group(0) @binding(5) var<storage, read_write> c2: array<u32>;  // the KV caches, f16 pairs
@group(0) @binding(6) var<storage, read_write> c3: array<u32>;
#else
@group(0) @binding(5) var<storage, read_write> c2: array<f32>;
@group(0) @binding(6) var<storage, read_write> c3: array<f32>;
#endif
#endif
#if ROPE
@group(0) @binding(7) var<storage, read> pos: array<u32>;
@group(0) @binding(8) var<storage, read> rowbase: array<u32>;
var<workgroup> pairs: array<f32, 128>;  // XROWS × WROWS (at most 16) results, for the rotation's partner

#include rope_pair

// this thread's value of dim d after the rotation, its pair's other value being `partner`
fn rotated(value: f32, partner: f32, d: u32, at: u32) -> f32 {
  if (d >= p.n_rot) { return value; }
  let i = d / 2u;
#if FACTORS
  let turn = f32(at) / norm_extra(p.factors + i);
#else
  let turn = f32(at);
#endif
  if (d % 2u == 0u) { return rope_pair(value, partner, i, p.n_rot, turn, p.theta).x; }
  return rope_pair(partner, value, i, p.n_rot, turn, p.theta).y;
}
#endif
#if RESIDUAL
@group(0) @binding(9) var<storage, read> o: array<vec4<f32>>;
@group(0) @binding(10) var<storage, read_write> xout: array<vec4<f32>>;
const STAGED = 256u;  // groups of 4 folded input values staged at once, for all the rows
var<workgroup> xs: array<vec4<f32>, STAGED>;  // rows × tile folded input values
var<workgroup> sums16: array<f32, 128>;  // XROWS × 16 partial sums of O's squares
var<workgroup> inv: array<f32, 8>;  // each row's 1 / rms(O)

// O's group i of row m: the sum of its p.parts shares in order (causal.wgsl's OPROJ heads), or O itself
fn pending(m: u32, i: u32, k4: u32) -> vec4<f32> {
  let at = m * p.parts * k4 + i;
  var value = o[at];
#if UNROLLED
  for (var h0 = 1u; h0 < p.parts; h0 += 4u) {
    var share: array<vec4<f32>, 4>;  // 4 shares loaded at once (past the last: a repeat, unused), then added in order
#for u 4
    share[${u}] = o[at + min(h0 + ${u}u, p.parts - 1u) * k4];
#endfor
#for u 4
    if (h0 + ${u}u < p.parts) { value += share[${u}]; }
#endfor
  }
#else
  for (var h = 1u; h < p.parts; h++) { value += o[at + h * k4]; }
#endif
  return value;
}
#endif

const LANES = ${LANES}u;  // threads along K for one W row (16 × 4 f16 are one 128-byte line)
const WROWS = ${WROWS}u;  // W rows a workgroup: LANES × WROWS = 256 (ops.linear_lanes)
const XROWS = 8u;  // X rows a workgroup
const UNROLL = ${UNROLL}u;  // a lane's groups of 4 loaded at once (ops.LINEAR_UNROLL)
var<workgroup> part: array<f32, 2048>;  // XROWS × WROWS × LANES partial sums

// the gate's activation: SiLU (Llama's SwiGLU) or, with GELU_TANH, tanh-approximated GELU (Gemma's GeGLU)
fn glu_act(g: f32) -> f32 {
#if GELU_TANH
  // tanh clamped: it is 1.0 past 15 in f32, and tanh from exp overflows past ~88 on some backends
  return 0.5 * g * (1.0 + tanh(clamp(0.7978845608028654 * (g + 0.044715 * g * g * g), -15.0, 15.0)));
#else
  return g / (1.0 + exp(-g));
#endif
}

// Sum the LANES lanes' values of every X row for this thread's W row (in `part`); lane m gets row m's,
// adding the lanes in order. Two barriers: a tree would take five, and a CPU adapter (SwiftShader,
// lavapipe) pays for each barrier on every group of invocations of every workgroup.
fn lanes_sum(lx: u32, ly: u32, rows: u32, v: array<f32, 8>) -> f32 {
#for m 8
  if (${m}u < rows) { part[(${m}u * WROWS + ly) * LANES + lx] = v[${m}]; }
#endfor
  workgroupBarrier();
  var out = 0.0;
  if (lx < rows) {
    let at = (lx * WROWS + ly) * LANES;
    out = part[at];
    for (var j = 1u; j < LANES; j++) { out += part[at + j]; }
  }
  workgroupBarrier();
  return out;
}

// this thread's sums over its W row and up to 8 X rows: the product, X's squares (NORM), the up half
// (GLU). Every index into them (and into any thread's array here) is a constant, the loops over rows
// and loads written out by #for: indexed by a loop counter, an array can leave the registers.
var<private> acc: array<f32, 8>;
var<private> sq: array<f32, 8>;
var<private> up: array<f32, 8>;

// the up half's 4 values at group i (GLU), else nothing to read
fn gate_up4(row: u32, i: u32, k4: u32) -> vec4<f32> {
#if GLU
  return weights4(row + p.N, i, k4);
#else
  return vec4<f32>(0.0);
#endif
}

// the norm's 4 weights at group i (NORM), else nothing to read
fn norm4(i: u32) -> vec4<f32> {
#if NORM
  return nw[i];
#else
  return vec4<f32>(1.0);
#endif
}

// add group i of the thread's W row (wv, up half uv, norm weights nv) to its sums for each X row
fn take(i: u32, t0: u32, tile: u32, rows: u32, m0: u32, k4: u32, wv: vec4<f32>, uv: vec4<f32>, nv: vec4<f32>) {
#for m 8
  if (${m}u < rows) {
#if RESIDUAL
    let xr = xs[${m}u * tile + i - t0];
#else
    let xr = x[(m0 + ${m}u) * k4 + i];
#endif
#if NORM
    sq[${m}] += dot(xr, xr);
    let xv = xr * nv;
#else
    let xv = xr;
#endif
    acc[${m}] += dot(xv, wv);
#if GLU
    up[${m}] += dot(xv, uv);
#endif
  }
#endfor
}

@compute @workgroup_size(${LANES}, ${WROWS})
fn main(
  @builtin(local_invocation_id) l: vec3u,
  @builtin(workgroup_id) g: vec3u,
) {
  let m0 = g.y * XROWS;
  let rows = min(XROWS, p.M - m0);
  let k4 = p.K / 4u;
  let col = g.x * WROWS + l.y;
  let live = col < p.N;
  let wrow = p.n0 + min(col, p.N - 1u);
#if RESIDUAL
  let flat = l.y * LANES + l.x;
#if PLAIN
#else
  for (var m = 0u; m < XROWS; m++) {
    var ss = 0.0;
    if (m < rows) {
      for (var i = flat; i < k4; i += LANES * WROWS) {
        let ov = pending(m0 + m, i, k4);
        ss += dot(ov, ov);
      }
    }
    part[m * LANES * WROWS + flat] = ss;
  }
  workgroupBarrier();
  if (flat < 16u * rows) {  // row flat / 16's sums 16 at a time in order, then those in order
    let at = (flat / 16u) * LANES * WROWS + 16u * (flat % 16u);
    var ss = part[at];
    for (var j = 1u; j < 16u; j++) { ss += part[at + j]; }
    sums16[flat] = ss;
  }
  workgroupBarrier();  // (part is free again: the products' sums go there next)
  if (flat < rows) {
    var ss = sums16[16u * flat];
    for (var j = 1u; j < 16u; j++) { ss += sums16[16u * flat + j]; }
    inv[flat] = inverseSqrt(ss / f32(p.K) + p.eps);
  }
  workgroupBarrier();
#endif
  // the rows' tile: the whole of a short row where one or two rows come (a decode step), else 32
  // groups of 4 a row; what a lane sums, and in what order, does not depend on it
  let tile = max(32u, STAGED / rows / 32u * 32u);
#else
  let tile = k4;  // one tile: the input read straight from x
#endif
  // a lane takes every LANES-th group of 4 (those ≡ l.x mod LANES) across the tiles in turn: the
  // same order as in one tile, whatever the tile
  for (var t0 = 0u; t0 < k4; t0 += tile) {
#if RESIDUAL
    // the tile's folded input, computed once for the workgroup's 16 weight rows; the first column of
    // workgroups writes it to the stream's next buffer
    for (var e = flat; e < rows * tile; e += LANES * WROWS) {
      let m = e / tile;
      let i = t0 + e % tile;
      var folded = vec4<f32>(0.0);
      if (m < rows && i < k4) {
        let at = (m0 + m) * k4 + i;
#if PLAIN
        folded = x[at] + pending(m0 + m, i, k4);
#else
        folded = x[at] + pending(m0 + m, i, k4) * inv[m] * nw[k4 + i];
#endif
        if (g.x == 0u) { xout[at] = folded; }
      }
      xs[e] = folded;
    }
    workgroupBarrier();
#endif
    let end = min(k4, t0 + tile);
    let first = t0 + (l.x + LANES - t0 % LANES) % LANES;  // this lane's first group in the tile
#if UNROLLED
    for (var i0 = first; live && i0 < end; i0 += UNROLL * LANES) {
      // UNROLL of this lane's groups of 4 loaded before any is used (loads in flight at once, where a
      // short row leaves a thread few iterations), then summed in the same order as one at a time
      var wv: array<vec4<f32>, UNROLL>;
      var uv: array<vec4<f32>, UNROLL>;
      var nv: array<vec4<f32>, UNROLL>;
#for u UNROLL
      let at${u} = min(i0 + ${u}u * LANES, end - 1u);  // past the end: a repeat, loaded and left unused
      wv[${u}] = weights4(wrow, at${u}, k4);
      uv[${u}] = gate_up4(wrow, at${u}, k4);
      nv[${u}] = norm4(at${u});
#endfor
#for u UNROLL
      if (i0 + ${u}u * LANES < end) { take(i0 + ${u}u * LANES, t0, tile, rows, m0, k4, wv[${u}], uv[${u}], nv[${u}]); }
#endfor
    }
#else
    for (var i = first; live && i < end; i += LANES) {
      take(i, t0, tile, rows, m0, k4, weights4(wrow, i, k4), gate_up4(wrow, i, k4), norm4(i));
    }
#endif
#if RESIDUAL
    workgroupBarrier();  // the tile is read before the next is staged
#endif
  }
  var value = lanes_sum(l.x, l.y, rows, acc);
#if GLU
  var u = lanes_sum(l.x, l.y, rows, up);
#endif
#if NORM
  let scale = inverseSqrt(lanes_sum(l.x, l.y, rows, sq) / f32(p.K) + p.eps);
  value *= scale;
#if GLU
  u *= scale;
#endif
#endif
#if GLU
  value = glu_act(value) * u;
#endif
#if BIAS
  value += norm_extra(p.K + wrow);
#endif
#if ROPE
  if (l.x < XROWS) { pairs[l.x * WROWS + l.y] = value; }
  workgroupBarrier();
  let partner = pairs[(l.x % XROWS) * WROWS + (l.y ^ 1u)];
#endif
  if (!live || l.x >= rows) { return; }
  let m = m0 + l.x;
#if ROPE
  let row = rowbase[m] + pos[m];
  if (col < p.N1) {
    c[m * p.N1 + col] = rotated(value, partner, col % p.D, pos[m]);
  } else if (col % 2u == 0u && col < p.N1 + p.N2) {  // a key pair, written by its even column
    let kc = col - p.N1;
    let pair = vec2f(rotated(value, partner, kc % p.D, pos[m]), rotated(partner, value, kc % p.D + 1u, pos[m]));
    c2[(row * p.N2 + kc) / 2u] = pack2x16float(pair);
  } else if (col % 2u == 0u) {  // a value pair
    let n3 = p.N - p.N1 - p.N2;
    c3[(row * n3 + col - p.N1 - p.N2) / 2u] = pack2x16float(vec2f(value, partner));
  }
#else
#if SPLIT
  if (col < p.N1) {
    c[m * p.N1 + col] = value;
  } else if (col < p.N1 + p.N2) {
    c2[m * p.N2 + col - p.N1] = value;
  } else {
    let n3 = p.N - p.N1 - p.N2;
    c3[m * n3 + col - p.N1 - p.N2] = value;
  }
#else
#if ACCUM
  c[m * p.N + col] += value;
#else
  c[m * p.N + col] = value;
#endif
#endif
#endif
}
