// D1: a software WebGPU adapter (SwiftShader, from --enable-unsafe-webgpu) is measured and ranked below wasm.
import { expect, test } from '@playwright/test';
import { embed, openForge } from './helpers';

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
