// A weight matrix's rows as the GPU holds them (the including kernel declares `w`): f16 or f32
// (array<vec4<FLOAT>>), or with Q8 or Q4 as quant8.wgsl and quant4.wgsl write them (array<u32>).
// values 4i .. 4i + 3 of W's row `row`, as f32
fn weights4(row: u32, i: u32, k4: u32) -> vec4<f32> {
#if Q8
  let at = row * (k4 + k4 / 8u);
  let word = bitcast<i32>(w[at + i]);
  let q = vec4<i32>(extractBits(word, 0u, 8u), extractBits(word, 8u, 8u), extractBits(word, 16u, 8u),
    extractBits(word, 24u, 8u));
  return vec4<f32>(q) * bitcast<f32>(w[at + k4 + i / 8u]);
#else
#if Q4
  let at = row * (k4 / 2u + k4 / 4u);
  let word = w[at + i / 2u] >> (16u * (i % 2u));
  let q = vec4<f32>(vec4<u32>(word, word >> 4u, word >> 8u, word >> 12u) & vec4<u32>(0xFu));
  let pair = at + k4 / 2u + 2u * (i / 8u);
  return q * bitcast<f32>(w[pair]) + bitcast<f32>(w[pair + 1u]);
#else
  return vec4<f32>(w[row * k4 + i]);
#endif
#endif
}
