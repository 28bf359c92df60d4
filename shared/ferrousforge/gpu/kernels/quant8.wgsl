// f32 rows → the decoder's 8-bit weights (linear.wgsl and gather.wgsl with Q8): a row of K values
// (K a multiple of 32) becomes K / 4 words of four signed bytes, then K / 32 f32 scales, one a block of
// 32 values: d = max |x| / 127, q = round(x / d), as llama.cpp quantizes Q8_0 (a Q8_0 tensor keeps
// its values, to f32 rounding). One invocation a block; a row is K / 4 + K / 32 words.
struct Params { blocks: u32, k: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> y: array<u32>;

fn byte(q: f32) -> u32 { return u32(i32(q)) & 0xFFu; }

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) n: vec3u) {
  let b = gid.x + gid.y * n.x * 256u;
  if (b >= p.blocks) { return; }
  let per_row = p.k / 32u;
  let k4 = p.k / 4u;
  let at = (b / per_row) * (k4 + per_row);  // the row's first word
  let j = b % per_row;
  var amax = 0.0;
  for (var i = 0u; i < 8u; i++) {
    let v = abs(x[b * 8u + i]);
    amax = max(amax, max(max(v.x, v.y), max(v.z, v.w)));
  }
  let d = amax / 127.0;
  let id = select(0.0, 1.0 / d, d > 0.0);
  for (var i = 0u; i < 8u; i++) {
    let q = clamp(round(x[b * 8u + i] * id), vec4<f32>(-127.0), vec4<f32>(127.0));
    y[at + j * 8u + i] = byte(q.x) | (byte(q.y) << 8u) | (byte(q.z) << 16u) | (byte(q.w) << 24u);
  }
  y[at + k4 + j] = bitcast<u32>(d);
}
