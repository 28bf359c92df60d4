// Reading GGUF blocks byte by byte from a kernel's `raw: array<u32>` binding (dequant.wgsl and
// quant4.wgsl): bytes, signed bytes, f16 fields, and the packed 6-bit scales and mins of K-quants.
fn byte(o: u32) -> u32 { return (raw[o >> 2u] >> ((o & 3u) * 8u)) & 0xFFu; }
fn sbyte(o: u32) -> f32 { return f32(bitcast<i32>(byte(o) << 24u) >> 24u); }
fn f16at(o: u32) -> f32 { return unpack2x16float(byte(o) | (byte(o + 1u) << 8u)).x; }

// value i (0..31) of a 16-byte run of nibbles at o laid out as Q4_0's: i < 16 low nibbles, then high
// (values i and i + 16 share a byte; select evaluates both arms)
fn nibble(o: u32, i: u32) -> u32 {
  let x = byte(o + i % 16u);
  return select(x >> 4u, x & 0xFu, i < 16u);
}

// scale and min of sub-block s of a Q4_K or Q5_K block, 6 bits each, packed in the 12 bytes at sc
fn scale_min(sc: u32, s: u32) -> vec2f {
  if (s < 4u) {
    return vec2f(f32(byte(sc + s) & 63u), f32(byte(sc + s + 4u) & 63u));
  }
  let scale = (byte(sc + s + 4u) & 0xFu) | ((byte(sc + s - 4u) >> 6u) << 4u);
  let mn = (byte(sc + s + 4u) >> 4u) | ((byte(sc + s) >> 6u) << 4u);
  return vec2f(f32(scale), f32(mn));
}
