// GGUF weights → f32, one value an invocation, from the tensor's raw bytes as llama.cpp lays them out
// (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL: 32 values a block; Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS: 256;
// F16, BF16). Run once at load. The values land from out[offset] on (matrices stacked in one buffer).
struct Params { n: u32, offset: u32, pad1: u32, pad2: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> raw: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

#include gguf_bytes

// the 16 non-uniform levels of IQ4_NL and IQ4_XS (llama.cpp's kvalues_iq4nl)
var<private> IQ4_LEVELS: array<f32, 16> = array<f32, 16>(
  -127.0, -104.0, -83.0, -65.0, -49.0, -35.0, -22.0, -10.0, 1.0, 13.0, 25.0, 38.0, 53.0, 69.0, 89.0, 113.0,
);

fn value(v: u32) -> f32 {
#if Q4_0
  let b = (v / 32u) * 18u;
  let q = nibble(b + 2u, v % 32u);
  return (f32(q) - 8.0) * f16at(b);
#endif
#if Q4_1
  let b = (v / 32u) * 20u;
  let q = nibble(b + 4u, v % 32u);
  return f32(q) * f16at(b) + f16at(b + 2u);
#endif
#if Q5_0
  let b = (v / 32u) * 22u;
  let j = v % 16u;
  let qh = byte(b + 2u) | (byte(b + 3u) << 8u) | (byte(b + 4u) << 16u) | (byte(b + 5u) << 24u);
  let low = select(byte(b + 6u + j) >> 4u, byte(b + 6u + j) & 0xFu, v % 32u < 16u);
  let high = select((qh >> (j + 12u)) & 0x10u, ((qh >> j) << 4u) & 0x10u, v % 32u < 16u);
  return (f32(low | high) - 16.0) * f16at(b);
#endif
#if Q5_1
  let b = (v / 32u) * 24u;
  let j = v % 16u;
  let qh = byte(b + 4u) | (byte(b + 5u) << 8u) | (byte(b + 6u) << 16u) | (byte(b + 7u) << 24u);
  let low = select(byte(b + 8u + j) >> 4u, byte(b + 8u + j) & 0xFu, v % 32u < 16u);
  let high = select((qh >> (j + 12u)) & 0x10u, ((qh >> j) << 4u) & 0x10u, v % 32u < 16u);
  return f32(low | high) * f16at(b) + f16at(b + 2u);
#endif
#if Q8_0
  let b = (v / 32u) * 34u;
  return sbyte(b + 2u + v % 32u) * f16at(b);
#endif
#if Q4_K
  let b = (v / 256u) * 144u;
  let r = v % 256u;
  let j = r / 64u;
  let high = (r % 64u) / 32u;
  let sm = scale_min(b + 4u, 2u * j + high);  // sub-block 2j + high
  let q = byte(b + 16u + 32u * j + r % 32u);
  let nib = select(q & 0xFu, q >> 4u, high == 1u);
  return f16at(b) * sm.x * f32(nib) - f16at(b + 2u) * sm.y;
#endif
#if Q5_K
  let b = (v / 256u) * 176u;
  let r = v % 256u;
  let j = r / 64u;
  let high = (r % 64u) / 32u;
  let l = r % 32u;
  let sm = scale_min(b + 4u, 2u * j + high);
  let q = byte(b + 48u + 32u * j + l);
  let nib = select(q & 0xFu, q >> 4u, high == 1u);
  let fifth = select(0u, 16u, (byte(b + 16u + l) & (1u << (2u * j + high))) != 0u);
  return f16at(b) * sm.x * f32(nib + fifth) - f16at(b + 2u) * sm.y;
#endif
#if Q2_K
  let b = (v / 256u) * 84u;
  let r = v % 256u;
  let n = r / 128u;
  let j = (r % 128u) / 32u;
  let l = r % 32u;
  let sc = byte(b + n * 8u + j * 2u + l / 16u);
  let q = (byte(b + 16u + n * 32u + l) >> (2u * j)) & 3u;
  return f16at(b + 80u) * f32(sc & 0xFu) * f32(q) - f16at(b + 82u) * f32(sc >> 4u);
#endif
#if Q3_K
  let b = (v / 256u) * 110u;
  let r = v % 256u;
  let n = r / 128u;
  let j = (r % 128u) / 32u;
  let l = r % 32u;
  let s = n * 8u + j * 2u + l / 16u;  // 16 scales of 6 bits: 4 low bits, then 2 high ones
  let low = select(byte(b + 96u + s % 8u) >> 4u, byte(b + 96u + s % 8u) & 0xFu, s < 8u);
  let high = (byte(b + 104u + s % 4u) >> (2u * (s / 4u))) & 3u;
  let scale = f32(i32(low | (high << 4u)) - 32);
  let q = i32((byte(b + 32u + n * 32u + l) >> (2u * j)) & 3u);
  let lost = select(4, 0, (byte(b + l) & (1u << (4u * n + j))) != 0u);  // the high bit, kept in hmask
  return f16at(b + 108u) * scale * f32(q - lost);
#endif
#if IQ4_NL
  let b = (v / 32u) * 18u;
  return f16at(b) * IQ4_LEVELS[nibble(b + 2u, v % 32u)];
#endif
#if IQ4_XS
  let b = (v / 256u) * 136u;
  let r = v % 256u;
  let ib = r / 32u;
  let i = r % 32u;
  let scales_h = byte(b + 2u) | (byte(b + 3u) << 8u);
  let ls = ((byte(b + 4u + ib / 2u) >> (4u * (ib % 2u))) & 0xFu) | (((scales_h >> (2u * ib)) & 3u) << 4u);
  return f16at(b) * f32(i32(ls) - 32) * IQ4_LEVELS[nibble(b + 8u + 16u * ib, i)];
#endif
#if BF16
  return bitcast<f32>((byte(2u * v) | (byte(2u * v + 1u) << 8u)) << 16u);
#endif
#if Q6_K
  let b = (v / 256u) * 210u;
  let r = v % 256u;
  let n = r / 128u;
  let quarter = (r % 128u) / 32u;
  let l = r % 32u;
  let ql = b + n * 64u + l + select(0u, 32u, quarter == 1u || quarter == 3u);
  let low = select(byte(ql) & 0xFu, byte(ql) >> 4u, quarter >= 2u);
  let qh = (byte(b + 128u + n * 32u + l) >> (2u * quarter)) & 3u;
  let q = f32(low | (qh << 4u)) - 32.0;
  let scale = sbyte(b + 192u + n * 8u + l / 16u + 2u * quarter);
  return f16at(b + 208u) * scale * q;
#endif
#if HALF
  return f16at(2u * v);
#endif
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) groups: vec3u) {
  let v = gid.x + gid.y * groups.x * 256u;
  if (v < p.n) { out[p.offset + v] = value(v); }
}
