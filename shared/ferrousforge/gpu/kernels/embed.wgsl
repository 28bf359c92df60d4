// BERT's input embeddings: out[t] = word[ids[t]] + position[pos[t]] + type[types[t]], for T tokens
// of width D (the LayerNorm after it is layernorm.wgsl).
struct Params { T: u32, D: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read> pos: array<u32>;
@group(0) @binding(3) var<storage, read> types: array<u32>;
@group(0) @binding(4) var<storage, read> word: array<f32>;
@group(0) @binding(5) var<storage, read> position: array<f32>;
@group(0) @binding(6) var<storage, read> type_table: array<f32>;
@group(0) @binding(7) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let d = gid.x;
  let t = gid.y + gid.z * 65535u;  // tokens past the grid's limit fold into z (ops._tokens)
  if (d >= p.D || t >= p.T) { return; }
  out[t * p.D + d] = word[ids[t] * p.D + d] + position[pos[t] * p.D + d] + type_table[types[t] * p.D + d];
}
