// GGUF Q4_0, Q4_1 or Q4_K blocks → the decoder's 4-bit weights (linear.wgsl and gather.wgsl with Q4),
// exactly: every block of 32 values is q · scale + min with q in 0..15 (Q4_0: scale d, min -8d; Q4_1:
// d, m; Q4_K's sub-blocks: d · sc, -dmin · m, products exact in f32), so the packed values are the
// dequantized ones. A row of K values (K a multiple of 32) becomes K / 8 words of eight 4-bit q (value
// 8w + j in bits 4j of word w), then K / 32 pairs of f32 (scale, min): 3K / 16 words, 0.75 bytes a
// value. One invocation a block of 32; rows land from row `row0` on (tensors stacked in one buffer).
struct Params { blocks: u32, k: u32, row0: u32, pad: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> raw: array<u32>;
@group(0) @binding(2) var<storage, read_write> y: array<u32>;

#include gguf_bytes

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) n: vec3u) {
  let b = gid.x + gid.y * n.x * 256u;
  if (b >= p.blocks) { return; }
  let per_row = p.k / 32u;
  let at = (p.row0 + b / per_row) * (3u * p.k / 16u);  // the row's first word
  let j = b % per_row;
  var q = array<u32, 32>();
  var scale = 0.0;
  var mn = 0.0;
#if Q4_0
  let o = b * 18u;
  for (var i = 0u; i < 32u; i++) { q[i] = nibble(o + 2u, i); }
  scale = f16at(o);
  mn = -8.0 * scale;
#endif
#if Q4_1
  let o = b * 20u;
  for (var i = 0u; i < 32u; i++) { q[i] = nibble(o + 4u, i); }
  scale = f16at(o);
  mn = f16at(o + 2u);
#endif
#if Q4_K
  let o = (b / 8u) * 144u;
  let s = b % 8u;  // sub-block 2j + high: 32 values of bytes 32j.. (low nibbles, or high)
  let sm = scale_min(o + 4u, s);
  for (var i = 0u; i < 32u; i++) {
    let x = byte(o + 16u + 32u * (s / 2u) + i);
    q[i] = select(x & 0xFu, x >> 4u, s % 2u == 1u);
  }
  scale = f16at(o) * sm.x;
  mn = -(f16at(o + 2u) * sm.y);
#endif
  for (var w = 0u; w < 4u; w++) {
    var word = 0u;
    for (var i = 0u; i < 8u; i++) { word |= q[8u * w + i] << (4u * i); }
    y[at + 4u * j + w] = word;
  }
  let pair = at + p.k / 8u + 2u * j;
  y[pair] = bitcast<u32>(scale);
  y[pair + 1u] = bitcast<u32>(mn);
}
