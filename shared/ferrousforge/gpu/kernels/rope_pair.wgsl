// One RoPE rotation, used by causal.wgsl (ROTATE, Gemma) and linear.wgsl (ROPE, Llama): the
// pair (x0, x1) of pair index i (of n_rot / 2) at position `at`, turned by at · theta^(-2i / n_rot)
// (`at` divided by the pair's frequency factor where the model has them: Llama 3's rope_freqs).
fn rope_pair(x0: f32, x1: f32, i: u32, n_rot: u32, at: f32, theta: f32) -> vec2f {
  let angle = at * pow(theta, -2.0 * f32(i) / f32(n_rot));
  let c = cos(angle);
  let s = sin(angle);
  return vec2f(x0 * c - x1 * s, x0 * s + x1 * c);
}
