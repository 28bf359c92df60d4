// The gate's activation in a gated feed-forward layer: SiLU (Llama: SwiGLU) or, with GELU_TANH, the
// tanh-approximated GELU (Gemma: GeGLU). One definition for glu.wgsl and the fused matmul.
fn glu_act(g: f32) -> f32 {
#if GELU_TANH
  return 0.5 * g * (1.0 + tanh(0.7978845608028654 * (g + 0.044715 * g * g * g)));
#else
  return g / (1.0 + exp(-g));
#endif
}
