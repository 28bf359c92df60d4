// Token embeddings: out[t] = table[ids[t] - first] · scale (Gemma scales by sqrt(n_embd); others by 1)
// for the ids this slice of the table holds (first ≤ id < first + rows); other rows are left alone.
// The table is f16 with F16 (the decoder's tied embeddings and output projection, kept once).
struct Params { T: u32, D: u32, scale: f32, first: u32, rows: u32, pad0: u32, pad1: u32, pad2: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read> table: array<FLOAT>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let d = gid.x;
  let t = gid.y + gid.z * 65535u;  // tokens past the grid's limit fold into z (ops._tokens)
  if (d >= p.D || t >= p.T || ids[t] < p.first || ids[t] >= p.first + p.rows) { return; }
  out[t * p.D + d] = f32(table[(ids[t] - p.first) * p.D + d]) * p.scale;
}
