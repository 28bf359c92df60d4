// D1: a software WebGPU adapter (SwiftShader, from --enable-unsafe-webgpu) is measured and ranked below wasm.
import { expect, test } from '@playwright/test';
import { cosine, embed, openForge, why } from './helpers';

test('software WebGPU is found, measured and ranked below wasm', async ({ page }) => {
  await openForge(page);
  const caps = await page.evaluate(() => (window as any).forge.capabilities());
  const gpu = caps.accelerators.find((a: any) => a.name === 'browser-webgpu');
  const wasm = caps.accelerators.find((a: any) => a.name === 'browser-wasm');
  expect(gpu.error).toBeUndefined();
  expect(gpu.software).toBe(true);
  expect(gpu.max_buffer).toBeGreaterThan(0);
  expect(gpu.gflops).toBeGreaterThan(0);
  expect(gpu.gflops).toBeLessThan(wasm.gflops);
  expect(caps.ranking).toEqual(['browser-wasm', 'browser-webgpu']);
  const out = await embed(page, { model: 'all-minilm', input: 'hello' });
  expect(out.placement).toBe('browser-wasm');
});

// H: FerrousForge's own WGSL kernels (ferrousforge.gpu) on the page's WebGPU, forced onto SwiftShader.
test('browser-webgpu embeds and reranks with the compute layer, agreeing with the host', async ({ page }) => {
  await openForge(page);
  const input = ['The cat sat on the mat.', 'Semantic search finds passages by meaning.', 'héllo wörld'];
  const gpu = await embed(page, { model: 'all-minilm', input, placement: 'browser-webgpu' });
  expect(gpu.placement, why(gpu)).toBe('browser-webgpu');
  const host = await embed(page, { model: 'all-minilm', input, placement: 'host' });
  gpu.embeddings.forEach((v: number[], i: number) => expect(cosine(v, host.embeddings[i])).toBeGreaterThan(0.9999));
  const body = { model: 'all-minilm', query: 'a cat', documents: ['The cat sat on the mat.', 'Tax law.'] };
  const ours = await page.evaluate((b) => (window as any).forge.rerank({ ...b, placement: 'browser-webgpu' }), body);
  const ref = await page.evaluate((b) => (window as any).forge.rerank({ ...b, placement: 'host' }), body);
  expect(ours.placement, why(ours)).toBe('browser-webgpu');
  for (const r of ref.results) {
    const mine = ours.results.find((x: any) => x.index === r.index);
    expect(Math.abs(mine.relevance_score - r.relevance_score)).toBeLessThan(1e-4);
  }
});

test('a failing GPU pipeline falls back to the host and says so', async ({ page }) => {
  await page.addInitScript(() => {
    const create = GPUDevice.prototype.createComputePipeline;
    GPUDevice.prototype.createComputePipeline = function (this: GPUDevice, d: GPUComputePipelineDescriptor) {
      if ((window as any).failGpu) throw new Error('pipeline creation failed (test)');
      return create.call(this, d);
    };
  });
  await openForge(page);  // the probe still measures the GPU
  await page.evaluate(() => { (window as any).failGpu = true; });
  const out = await embed(page, { model: 'all-minilm', input: ['hello'], placement: 'browser-webgpu' });
  expect(out.placement).toBe('host');
  expect(out.fallback).toContain('browser-webgpu failed');
  expect(out.fallback).toContain('pipeline creation failed (test)');
});

test('every compute-layer kernel compiles and runs on the page\'s WebGPU', async ({ page }) => {
  await openForge(page);
  const out = await page.evaluate(() => (window as any).forge.pyodide.runPythonAsync(`
import struct
from ferrousforge.gpu import ops
from ferrousforge.gpu.webgpu import WebGpuDevice

gpu = await WebGpuDevice.open()
tile = ops.MATMUL_TILES[0].defines()
variants = [("matmul", tile), ("matmul", {"GELU": True, "WT": True, **tile}), ("matmul", {"TANH": True, **tile}), ("matmul", {"SKINNY": True, "WT": True}), ("gemv", {}),
            ("layernorm", {"RESIDUAL": True}), ("rownorm", {"SOFTMAX": True}), ("rownorm", {"RMS": True, "ONE_PLUS": True}),
            ("attention", {"MAXS": 512}), ("embed", {}), ("pool", {"MEAN": True}), ("argmax", {}), ("argmax", {"PAIRS": True}), ("argmax", {"CHAIN": True}), ("argmax", {"PAIRS": True, "CHAIN": True}),
            ("causal", {}), ("gather", {}), ("topk", {}), ("topk", {"PAIRS": True}), ("rownorm", {"RMS": True, "ACCUM": True}),
            ("linear", {}), ("linear", {"NORM": True, "SPLIT": True}), ("linear", {"NORM": True, "GLU": True, "GELU_TANH": True}),
            ("linear", {"ACCUM": True}), ("linear", {"NORM": True, "SPLIT": True, "ROPE": True}), ("causal", {"ROTATE": True}), ("causal", {"ROTATE": True, "NEOX": True}),
            ("linear", {"NORM": True, "SPLIT": True, "RESIDUAL": True}), ("linear", {"NORM": True, "GLU": True, "GELU_TANH": True, "RESIDUAL": True}),
            ("linear", {"NORM": True, "SPLIT": True, "ROPE": True, "BIAS": True, "FACTORS": True}), ("linear", {"Q8": True, "NORM": True, "GLU": True}),
            ("gather", {"Q8": True}), ("quant8", {}), ("linear", {"Q4": True, "NORM": True, "GLU": True}), ("gather", {"Q4": True})]
variants = [(n, {"LANES": 16, "WROWS": 16, "UNROLL": 1, **d} if n == "linear" else {"UNROLL": 1, "KUNROLL": 1, **d} if n == "causal" else d) for n, d in variants]
variants += [("linear", {"LANES": 128, "WROWS": 2, "UNROLL": 4, "UNROLLED": True, "NORM": True, "SPLIT": True, "ROPE": True}), ("linear", {"LANES": 64, "WROWS": 4, "UNROLL": 8, "UNROLLED": True, "NORM": True, "GLU": True, "RESIDUAL": True})]
variants += [("linear", {"LANES": 32, "WROWS": 8, "UNROLL": 4, "UNROLLED": True, "Q4": True, "NORM": True, "GLU": True}), ("causal", {"UNROLL": 16, "KUNROLL": 16, "UNROLLED": True, "ROTATE": True, "NEOX": True}), ("causal", {"UNROLL": 16, "KUNROLL": 4, "UNROLLED": True})]  # a GPU's
variants += [("causal", {"UNROLL": 16, "KUNROLL": 4, "UNROLLED": True, "OPROJ": True, "Q4": True}), ("causal", {"UNROLL": 1, "KUNROLL": 1, "OPROJ": True, "Q8": True}), ("causal", {"UNROLL": 1, "KUNROLL": 1, "OPROJ": True}),
             ("linear", {"LANES": 32, "WROWS": 8, "UNROLL": 4, "UNROLLED": True, "NORM": True, "GLU": True, "RESIDUAL": True, "PLAIN": True}),
             ("causal", {"UNROLL": 16, "KUNROLL": 16, "UNROLLED": True, "ROTATE": True, "NEOX": True, "OPROJ": True, "Q4": True})]  # the output projection in the attention (Llama's, Gemma's)
variants += [("quant4", {k: True}) for k in ops.Q4_KINDS] + [("quant8", {"RAW": True, k: True}) for k in ops.Q8_KINDS]
variants += [("dequant", {"HALF" if k == "F16" else k: True}) for k in ops.GGUF_BLOCKS]
variants += [("matmul", {"GELU": True, "WT": True, "W4": t.prefetch, **t.defines()}) for t in ops.MATMUL_TILES[1:]]  # the tilings a GPU may choose (prefetching: SwiftShader compiles them with W4 only)
for name, defines in variants:
    gpu.kernel(name, **defines)
values = [0.0] * 5000
values[4500] = values[4999] = 9.0  # two chunks of 4096: the first maximum is in the second
x, best = gpu.upload(struct.pack("<5000f", *values)), gpu.buffer(8)
rec = gpu.record()
ops.argmax(rec, [(x, 5000, 0)], best, 1)
gpu.submit(rec)
[sum(gpu.kernel(n, **d).handle is not None for n, d in variants), struct.unpack("<I", await gpu.read(best, 4))[0]]
`).then((r: any) => r.toJs()));
  const [compiled, argmax] = out;
  expect(compiled).toBe(70);  // every variant has a pipeline; the read saw no device error
  expect(argmax).toBe(4500);  // the first of two equal maxima
});
