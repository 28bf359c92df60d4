// Rotary position embedding in place on x[T, H, D] (queries or keys), token t at position pos[t]:
// the first n_rot dims rotate by pos · base^(-2i / n_rot). NEOX pairs dim i with i + n_rot/2 (GPT-NeoX,
// Gemma); otherwise dims 2i and 2i+1 (llama.cpp's "normal" mode, Llama). With TWO, heads H.. of the
// grid rotate x2[T, H2, D] the same way (queries and keys in one dispatch).
struct Params { T: u32, H: u32, D: u32, n_rot: u32, base: f32, H2: u32, pad1: u32, pad2: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> pos: array<u32>;
@group(0) @binding(2) var<storage, read_write> x: array<f32>;
#if TWO
@group(0) @binding(3) var<storage, read_write> x2: array<f32>;
#endif

fn rotate(x0: f32, x1: f32, c: f32, s: f32) -> vec2f {
  return vec2f(x0 * c - x1 * s, x0 * s + x1 * c);
}

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_id) l: vec3u, @builtin(workgroup_id) g: vec3u) {
  let t = g.x;
  let second = g.y >= p.H;  // a head of x2 (TWO)
  let h = select(g.y, g.y - p.H, second);
  let row = (t * select(p.H, p.H2, second) + h) * p.D;
  let half = p.n_rot / 2u;
  for (var i = l.x; i < half; i += 64u) {
    let angle = f32(pos[t]) * pow(p.base, -2.0 * f32(i) / f32(p.n_rot));
    let c = cos(angle);
    let s = sin(angle);
#if NEOX
    let a = row + i;
    let b = row + i + half;
#else
    let a = row + 2u * i;
    let b = a + 1u;
#endif
#if TWO
    if (second) {
      let r = rotate(x2[a], x2[b], c, s);
      x2[a] = r.x;
      x2[b] = r.y;
      continue;
    }
#endif
    let r = rotate(x[a], x[b], c, s);
    x[a] = r.x;
    x[b] = r.y;
  }
}
