// Token embeddings: out[t] = table[ids[t] - first] · scale (Gemma scales by sqrt(n_embd); others by 1)
// for the ids this slice of the table holds (first ≤ id < first + rows); other rows are left alone.
// The table is f16 with F16, 8-bit with Q8, 4-bit with Q4 (the decoder's tied embeddings and output
// projection, kept once).
struct Params { T: u32, D: u32, scale: f32, first: u32, rows: u32, pad0: u32, pad1: u32, pad2: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
#if Q8
@group(0) @binding(2) var<storage, read> table: array<u32>;  // quant8.wgsl's rows
#else
#if Q4
@group(0) @binding(2) var<storage, read> table: array<u32>;  // quant4.wgsl's rows
#else
@group(0) @binding(2) var<storage, read> table: array<FLOAT>;
#endif
#endif
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

fn entry(row: u32, d: u32) -> f32 {
#if Q8
  let k4 = p.D / 4u;
  let at = row * (k4 + p.D / 32u);
  let q = extractBits(bitcast<i32>(table[at + d / 4u]), (d % 4u) * 8u, 8u);
  return f32(q) * bitcast<f32>(table[at + k4 + d / 32u]);
#else
#if Q4
  let at = row * (3u * p.D / 16u);
  let q = (table[at + d / 8u] >> (4u * (d % 8u))) & 0xFu;
  let pair = at + p.D / 8u + 2u * (d / 32u);
  return f32(q) * bitcast<f32>(table[pair]) + bitcast<f32>(table[pair + 1u]);
#else
  return f32(table[row * p.D + d]);
#endif
#endif
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let d = gid.x;
  let t = gid.y + gid.z * 65535u;  // tokens past the grid's limit fold into z (ops._tokens)
  if (d >= p.D || t >= p.T || ids[t] < p.first || ids[t] >= p.first + p.rows) { return; }
  out[t * p.D + d] = entry(ids[t] - p.first, d) * p.scale;
}
