// H2: GGUF generation on the page's WebGPU with FerrousForge's own decoder (ferrousforge.gpu), forced
// onto SwiftShader: the page streams exactly what the host's wgpu engine streams for the same request.
import { expect, test } from '@playwright/test';
import { abortAfter, generate, greedy, openForge, why } from './helpers';

const onHost = { engine: 'wgpu' };  // the host's own GPU engine (lavapipe here)

test('tiny llama, gemma3 and qwen2 GGUFs generate on browser-webgpu as the host\'s wgpu engine does', async ({ page }) => {
  test.setTimeout(300_000);
  await openForge(page);
  const auto = await generate(page, { model: 'tiny', prompt: 'the cat', options: greedy(4) });
  expect(auto.placement, why(auto)).toBe('browser-wasm');  // a software adapter never wins by itself
  let text = '';
  for (const model of ['tiny', 'tiny-gemma3', 'tiny-qwen2']) {
    const req = { model, prompt: 'the cat', raw: true, options: greedy(12) };
    const gpu = await generate(page, { ...req, placement: 'browser-webgpu' });
    expect(gpu.placement, why(gpu)).toBe('browser-webgpu');
    expect(gpu.pieces.join('')).toBe(gpu.response);
    expect(gpu.eval_count).toBe(12);
    expect(gpu.done_reason).toBe('length');
    const host = await generate(page, { ...req, options: { ...greedy(12), ...onHost }, placement: 'host' });
    expect(gpu.response).toBe(host.response);
    expect(gpu.prompt_eval_count).toBe(host.prompt_eval_count);
    text ||= gpu.response;
  }
  // a stop string ends the text before it; seeded sampling is reproducible in the page
  const needle = text.slice(6, 9);
  const stopped = await generate(page, { model: 'tiny', prompt: 'the cat', raw: true, placement: 'browser-webgpu',
    options: { ...greedy(12), stop: [needle] } });
  expect(stopped.response).toBe(text.slice(0, text.indexOf(needle)));
  expect(stopped.done_reason).toBe('stop');
  const seeded = { model: 'tiny', prompt: 'the cat', placement: 'browser-webgpu',
    options: { num_predict: 10, seed: 7, temperature: 1.0, top_k: 20 } };
  const [a, b] = [await generate(page, seeded), await generate(page, seeded)];
  expect(a.placement).toBe('browser-webgpu');
  expect(a.response).toBe(b.response);
});

test('an AbortSignal stops a generation on browser-webgpu between tokens; the next one runs', async ({ page }) => {
  test.setTimeout(180_000);
  await openForge(page);
  const req = { model: 'tiny', prompt: 'the cat', placement: 'browser-webgpu', options: { num_predict: 1000, temperature: 0 } };
  const out = await abortAfter(page, req, 3);
  expect(out.error).toBe('AbortError');
  expect(out.pieces).toBe(3);
  expect(out.already).toBe('AbortError');
  expect(out.next.placement, why(out.next)).toBe('browser-webgpu');
  expect(out.next.eval_count).toBe(4);
});

test('smollm2:135m answers on browser-webgpu with the host\'s wgpu engine\'s tokens', async ({ page }) => {
  test.setTimeout(600_000);
  await openForge(page);
  const messages = [{ role: 'user', content: 'What is the capital of France? Answer in one word.' }];
  const req = { model: 'smollm2:135m', messages, options: greedy(6) };
  const gpu = await page.evaluate((r) => (window as any).forge.chat({ ...r, placement: 'browser-webgpu' }), req);
  expect(gpu.placement, why(gpu)).toBe('browser-webgpu');
  const host = await page.evaluate(
    (r) => (window as any).forge.chat({ ...r, options: { ...r.options, engine: 'wgpu' }, placement: 'host' }), req);
  expect(gpu.message.content).toBe(host.message.content);
  expect(gpu.prompt_eval_count).toBe(host.prompt_eval_count);  // the template rendered alike
  expect(gpu.message.content).toContain('Paris');
});

test('a GPU device lost mid-stream: the host goes on from there and says so', async ({ page }) => {
  test.setTimeout(300_000);
  await page.addInitScript(() => {
    const request = GPUAdapter.prototype.requestDevice;
    (window as any).devices = [];
    GPUAdapter.prototype.requestDevice = async function (this: GPUAdapter, d?: GPUDeviceDescriptor) {
      const device = await request.call(this, d);
      (window as any).devices.push(device);
      return device;
    };
  });
  await openForge(page);
  const out = await page.evaluate(async () => {
    const pieces: string[] = [];
    const onToken = (t: string) => {
      pieces.push(t);
      if (pieces.length === 3) (window as any).devices.forEach((d: GPUDevice) => d.destroy());
    };
    const r = { model: 'tiny', prompt: 'the cat', raw: true, options: { num_predict: 12, temperature: 0 } };
    const res = await (window as any).forge.generate({ ...r, placement: 'browser-webgpu', onToken });
    return { ...res, pieces };
  });
  expect(out.placement).toBe('host');
  expect(out.fallback).toContain('browser-webgpu failed');
  expect(out.pieces.length).toBeGreaterThan(3);
  expect(out.pieces.join('')).toBe(out.response);  // nothing streamed twice
  expect(out.eval_count).toBe(12);  // the page's tokens and the host's
});
