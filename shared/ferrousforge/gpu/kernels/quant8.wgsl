// Rows → the decoder's 8-bit weights (linear.wgsl and gather.wgsl with Q8): a row of K values (K a
// multiple of 32) becomes K / 4 words of four signed bytes, then K / 32 f32 scales, one a block of 32.
// From f32 rows: d = max |x| / 127, q = round(x / d), as llama.cpp quantizes Q8_0. With Q8_0 or Q5_0,
// straight from the GGUF file's blocks, exactly: a Q8_0 block is d and 32 signed bytes, a Q5_0 block d
// and 32 values of 5 bits less 16, so q and d are the block's own and the packed values the
// dequantized ones. One invocation a block; a row is K / 4 + K / 32 words, rows landing from row `row0`
// on (tensors stacked in one buffer).
struct Params { blocks: u32, k: u32, row0: u32, pad: u32 }
@group(0) @binding(0) var<uniform> p: Params;
#if RAW
@group(0) @binding(1) var<storage, read> raw: array<u32>;  // the GGUF tensor's blocks
#include gguf_bytes
#else
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
#endif
@group(0) @binding(2) var<storage, read_write> y: array<u32>;

#if Q8_0
const BLOCK = 34u;  // bytes a block

fn block_q(o: u32, v: u32) -> i32 {  // value v of the Q8_0 block at byte o
  return i32(sbyte(o + 2u + v));
}
#endif
#if Q5_0
const BLOCK = 22u;

fn block_q(o: u32, v: u32) -> i32 {  // value v of the Q5_0 block at byte o (dequant.wgsl's layout)
  let j = v % 16u;
  let qh = byte(o + 2u) | (byte(o + 3u) << 8u) | (byte(o + 4u) << 16u) | (byte(o + 5u) << 24u);
  let low = select(byte(o + 6u + j) >> 4u, byte(o + 6u + j) & 0xFu, v < 16u);
  let high = select((qh >> (j + 12u)) & 0x10u, ((qh >> j) << 4u) & 0x10u, v < 16u);
  return i32(low | high) - 16;
}
#endif

fn byte_of(q: i32) -> u32 { return u32(q) & 0xFFu; }

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) n: vec3u) {
  let b = gid.x + gid.y * n.x * 256u;
  if (b >= p.blocks) { return; }
  let per_row = p.k / 32u;
  let k4 = p.k / 4u;
  let at = (p.row0 + b / per_row) * (k4 + per_row);  // the row's first word
  let j = b % per_row;
#if RAW
  let o = b * BLOCK;
  let d = f16at(o);
  for (var i = 0u; i < 8u; i++) {
    let v = 4u * i;
    y[at + j * 8u + i] = byte_of(block_q(o, v)) | (byte_of(block_q(o, v + 1u)) << 8u)
      | (byte_of(block_q(o, v + 2u)) << 16u) | (byte_of(block_q(o, v + 3u)) << 24u);
  }
#else
  var amax = 0.0;
  for (var i = 0u; i < 8u; i++) {
    let v = abs(x[b * 8u + i]);
    amax = max(amax, max(max(v.x, v.y), max(v.z, v.w)));
  }
  let d = amax / 127.0;
  let id = select(0.0, 1.0 / d, d > 0.0);
  for (var i = 0u; i < 8u; i++) {
    let q = vec4<i32>(clamp(round(x[b * 8u + i] * id), vec4<f32>(-127.0), vec4<f32>(127.0)));
    y[at + j * 8u + i] = byte_of(q.x) | (byte_of(q.y) << 8u) | (byte_of(q.z) << 16u) | (byte_of(q.w) << 24u);
  }
#endif
  y[at + k4 + j] = bitcast<u32>(d);
}
