// Decoder attention over a KV cache, with grouped-query heads and an optional sliding window:
// query t (at position pos[t]) of head h attends to its sequence's cached keys 0..pos[t] (only the last
// WINDOW of them when WINDOW > 0) of kv head h / (Hq / Hkv), its sequence's keys starting at cache row
// base[t]. q, out: [T, Hq, D]; kcache, vcache: [S, Hkv, D] in f16 (as llama.cpp's default cache: half
// the memory and the reads of f32); D a multiple of 4, ≤ 256.
// One workgroup a query and head, keys taken 64 at a time with a running max and sum (online softmax).
// Written for a decode step, where a handful of workgroups must cover the whole cache: the 256 threads
// share every key's work instead of one thread walking a key's D values alone. Scores: 4 threads a key,
// reading its row 16 bytes each side by side; values: each thread one group of 4 output dims and every
// 4th key of the block. So a thread issues a few independent loads a block, not hundreds in a row. The
// order of every sum is fixed by the block and D alone, the same for every query whatever else is in
// the batch, so a sequence's result does not depend on its batch.
//
// OPROJ (Llama's short heads, Gemma's with ROTATE): each workgroup also multiplies its head's output by that
// head's columns of the output projection W_o ([E, Hq · D], as linear.wgsl holds weights: f16, f32, Q8
// or Q4), writing out[t, h, :] (E values; with p.splits > 1 each of that many workgroups along z a part
// of them, every row computed alike whatever the parts); the next product adds the heads' shares in order
// (linear.wgsl's residual input in p.parts shares, PLAIN): the projection costs no dispatch of its own.
//
// ROTATE (Gemma): q holds the product's raw queries, keys and values of each row side by side
// ([T, Hq · D + 2 · Hkv · D], read only). Each query and key head is RMS-normalised (weights qkn: the
// queries' D, then the keys' D) and rotated (RoPE on the first n_rot dims by pos · theta^(-2i / n_rot); NEOX pairs dim i
// with i + n_rot / 2, else 2i with 2i + 1) in workgroup memory. p.mode says what a dispatch does:
// CACHE (1), the keys and values go into the cache at row base[t] + pos[t] (by the group's first head);
// ATTEND (2), the attention; both (3) in one dispatch where every row is its own sequence (a decode
// step): there each workgroup computes its group's new key and value itself and takes them from its own
// memory, not from the cache another workgroup is writing. Keys are computed at one place in the code,
// whatever the mode, so the one-dispatch and two-dispatch forms give the same bits; and the attention
// reads its own row's key and value from workgroup memory in both (ATTEND loads them there from the
// cache first), so its loop is one code path whatever the mode: a GPU compiler that specialised it by
// mode could contract its multiply-adds differently in each (on an H200 the two forms differed by up to
// 3e-4 before this).
struct Params {
  T: u32, Hq: u32, Hkv: u32, D: u32, scale: f32, window: u32, mode: u32, n_rot: u32, theta: f32, eps: f32,
  E: u32, splits: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
#if ROTATE
@group(0) @binding(2) var<storage, read_write> kcache: array<vec2<u32>>;  // f16, 4 values an entry
@group(0) @binding(3) var<storage, read_write> vcache: array<vec2<u32>>;
#else
@group(0) @binding(2) var<storage, read> kcache: array<vec2<u32>>;
@group(0) @binding(3) var<storage, read> vcache: array<vec2<u32>>;
#endif

fn unpack4(h: vec2<u32>) -> vec4<f32> { return vec4<f32>(unpack2x16float(h.x), unpack2x16float(h.y)); }
fn pack4(v: vec4<f32>) -> vec2<u32> { return vec2<u32>(pack2x16float(v.xy), pack2x16float(v.zw)); }
@group(0) @binding(4) var<storage, read> pos: array<u32>;
@group(0) @binding(5) var<storage, read> base: array<u32>;
#if ROTATE
@group(0) @binding(8) var<storage, read> qkn: array<f32>;  // (at most 8 storage buffers: WebGPU's least limit)
#endif
#if OPROJ
@group(0) @binding(6) var<storage, read_write> out: array<f32>;  // [T, Hq, E]: each head's share of W_o's product
#if Q8
@group(0) @binding(7) var<storage, read> w: array<u32>;
#else
#if Q4
@group(0) @binding(7) var<storage, read> w: array<u32>;
#else
@group(0) @binding(7) var<storage, read> w: array<vec4<FLOAT>>;
#endif
#endif
#include weights
#else
@group(0) @binding(6) var<storage, read_write> out: array<vec4<f32>>;
#endif

const BLOCK = 64u;  // keys a round
const SPLIT = 4u;  // threads a key's score; key groups of the values
const WG = 256u;
const UNROLL = ${UNROLL}u;  // a thread's values' loads issued at once (ops.attention_unroll)
const KUNROLL = ${KUNROLL}u;  // and its loads of a key's dims (no more than it has: D / 16)
#include reduce
var<workgroup> qs: array<vec4<f32>, 64>;  // the query (D / 4 ≤ 64)
var<workgroup> s: array<f32, 64>;  // the block's scores
var<workgroup> acc_all: array<vec4<f32>, 256>;  // the key groups' outputs, summed at the end
var<workgroup> sums: array<f32, 4>;
var<workgroup> tops: array<f32, 4>;  // the block's maximum in 4 parts

#if ROTATE
#include rope_pair
const CACHE = 1u;
const ATTEND = 2u;
var<workgroup> head: array<f32, 256>;  // a head being normalised and rotated
var<workgroup> ks: array<vec4<f32>, 64>;  // this pass's key and value of the group (mode 3)
var<workgroup> vs: array<vec4<f32>, 64>;

// Normalise and rotate the head in `head` (weights at qkn[w..]) in place, at position `at`.
fn prepare(tid: u32, w: u32, at: u32) {
  var value = 0.0;
  if (tid < p.D) { value = head[tid]; }
  let inv = inverseSqrt(reduce_sum(tid, value * value) / f32(p.D) + p.eps);
  if (tid < p.D) { head[tid] = value * inv * qkn[w + tid]; }
  workgroupBarrier();
  let half = p.n_rot / 2u;
  if (tid < half) {
#if NEOX
    let a = tid;
    let b = tid + half;
#else
    let a = 2u * tid;
    let b = a + 1u;
#endif
    let r = rope_pair(head[a], head[b], tid, p.n_rot, f32(at), p.theta);
    head[a] = r.x;
    head[b] = r.y;
  }
  workgroupBarrier();
}

// 4 dims from c · 4 of cache row `at`'s key or value, or with `own` this pass's, from workgroup memory
fn key4(own: bool, at: u32, c: u32) -> vec4<f32> {
  if (own) { return ks[c]; }
  return unpack4(kcache[at + c]);
}

fn value4(own: bool, at: u32, c: u32) -> vec4<f32> {
  if (own) { return vs[c]; }
  return unpack4(vcache[at + c]);
}

#else
fn key4(own: bool, at: u32, c: u32) -> vec4<f32> { return unpack4(kcache[at + c]); }

fn value4(own: bool, at: u32, c: u32) -> vec4<f32> { return unpack4(vcache[at + c]); }
#endif

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_id) l: vec3u, @builtin(workgroup_id) g: vec3u) {
  let tid = l.x;
  let t = g.x;
  let h = g.y;
  let group_size = p.Hq / p.Hkv;
  let kvh = h / group_size;
  let d4 = p.D / 4u;
  let orow = (t * p.Hq + h) * d4;  // this query head's output
  let row0 = base[t];
  let last = pos[t];
#if ROTATE
  let width4 = (p.Hq + 2u * p.Hkv) * d4;  // a row of queries, keys and values
  let qrow = t * width4 + h * d4;
  let fused = p.mode == CACHE + ATTEND;
  if (fused || (p.mode == CACHE && h % group_size == 0u)) {  // this pass's key and value of the group
    let src = t * width4 + (p.Hq + kvh) * d4;  // its key; the value Hkv heads on
    if (tid < p.D) { head[tid] = q[src + tid / 4u][tid % 4u]; }
    workgroupBarrier();
    prepare(tid, p.D, last);
    if (tid < d4) {  // as the cache holds them (f16), so that both forms attend to the same key
      let key = vec4<f32>(head[4u * tid], head[4u * tid + 1u], head[4u * tid + 2u], head[4u * tid + 3u]);
      ks[tid] = unpack4(pack4(key));
      vs[tid] = unpack4(pack4(q[src + p.Hkv * d4 + tid]));
    }
    workgroupBarrier();
    if (h % group_size == 0u && g.z == 0u && tid < d4) {  // (one workgroup of the group writes)
      let dst = ((row0 + last) * p.Hkv + kvh) * d4;
      kcache[dst + tid] = pack4(ks[tid]);
      vcache[dst + tid] = pack4(vs[tid]);
    }
  }
  if (p.mode == CACHE) { return; }
  if (!fused && tid < d4) {  // attend: this pass's key and value of the group, as the cache now holds them
    let at = ((row0 + last) * p.Hkv + kvh) * d4;
    ks[tid] = unpack4(kcache[at + tid]);
    vs[tid] = unpack4(vcache[at + tid]);
  }
  if (tid < p.D) { head[tid] = q[qrow + tid / 4u][tid % 4u]; }
  workgroupBarrier();
  prepare(tid, 0u, last);
  if (tid < d4) {
    qs[tid] = vec4<f32>(head[4u * tid], head[4u * tid + 1u], head[4u * tid + 2u], head[4u * tid + 3u]);
  }
#else
  if (tid < d4) { qs[tid] = q[orow + tid]; }
#endif
  var first = 0u;
  if (p.window > 0u && last + 1u > p.window) { first = last + 1u - p.window; }
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
      let own = k0 + key == last;
      for (var c0 = tid % SPLIT; c0 < d4; c0 += KUNROLL * SPLIT) {
        var kv: array<vec4<f32>, KUNROLL>;  // loaded before any is used, then summed in order
#for u KUNROLL
        kv[${u}] = key4(own, krow, min(c0 + ${u}u * SPLIT, d4 - 1u));
#endfor
#for u KUNROLL
        if (c0 + ${u}u * SPLIT < d4) { partial += dot(qs[c0 + ${u}u * SPLIT], kv[${u}]); }
#endfor
      }
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
    var new_m = m;  // the block's maximum (exact in any order)
#if UNROLLED
    if (tid < BLOCK / 16u) {  // on a GPU 16 scores a thread, then 4 (a CPU adapter pays for the barrier)
      var top = s[16u * tid];
      for (var j = 1u; j < 16u; j++) { top = max(top, s[16u * tid + j]); }
      tops[tid] = top;
    }
    workgroupBarrier();
    for (var j = 0u; j < BLOCK / 16u; j++) { new_m = max(new_m, tops[j]); }
#else
    for (var j = 0u; j < count; j++) { new_m = max(new_m, s[j]); }
#endif
    let keep = exp(m - new_m);
    sum *= keep;
    acc *= keep;
    if (col < d4) {
      for (var j0 = group; j0 < count; j0 += UNROLL * SPLIT) {
        var vv: array<vec4<f32>, UNROLL>;  // loaded before any is used, then summed in order
#for u UNROLL
        let key${u} = min(j0 + ${u}u * SPLIT, count - 1u);
        vv[${u}] = value4(k0 + key${u} == last, ((row0 + k0 + key${u}) * p.Hkv + kvh) * d4, col);
#endfor
#for u UNROLL
        if (j0 + ${u}u * SPLIT < count) {
          let w = exp(s[j0 + ${u}u * SPLIT] - new_m);
          sum += w;
          acc += w * vv[${u}];
        }
#endfor
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
#if OPROJ
    qs[tid] = total / (sums[0] + sums[1] + sums[2] + sums[3]);  // (the query is spent)
#else
    out[orow + tid] = total / (sums[0] + sums[1] + sums[2] + sums[3]);
#endif
  }
#if OPROJ
  workgroupBarrier();
  // the head's share of the output projection, a thread an output row: W_o[r, hD .. hD + D) · head,
  // its groups of 4 in order (UNROLL loaded at once); the rows in p.splits parts, one a workgroup along
  // z (each attending alike), so that few heads still spread W_o's reads over several cores
  let k4 = p.Hq * d4;
  let part_rows = (p.E + p.splits - 1u) / p.splits;
  let rows_end = min(p.E, (g.z + 1u) * part_rows);
  for (var r = g.z * part_rows + tid; r < rows_end; r += WG) {
    var share = 0.0;
    for (var i0 = 0u; i0 < d4; i0 += UNROLL) {
      var wv: array<vec4<f32>, UNROLL>;
#for u UNROLL
      wv[${u}] = weights4(r, h * d4 + min(i0 + ${u}u, d4 - 1u), k4);
#endfor
#for u UNROLL
      if (i0 + ${u}u < d4) { share += dot(qs[i0 + ${u}u], wv[${u}]); }
#endfor
    }
    out[(t * p.Hq + h) * p.E + r] = share;
  }
#endif
}
