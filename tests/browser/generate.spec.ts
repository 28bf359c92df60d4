// D2: GGUF generation in the browser (llama.cpp in wasm via wllama, driven from Python), placement,
// host fallback, the browser model cache.
import { expect, test, type Page } from '@playwright/test';
import { expectSameOrigin, forgeUrl, openForge, watch, why } from './helpers';

async function generate(page: Page, req: object): Promise<any> {
  return page.evaluate(async (r) => {
    const pieces: string[] = [];
    const out = await (window as any).forge.generate({ ...r, onToken: (t: string) => pieces.push(t) });
    return { ...out, pieces };
  }, req);
}

const greedy = (n: number) => ({ num_predict: n, temperature: 0 });

test('generates with a tiny GGUF in the browser, streaming tokens, with Ollama stats', async ({ page }) => {
  const w = watch(page);
  await openForge(page);
  await page.evaluate(() => (window as any).forge.configure({ threads: 1 }));
  const out = await generate(page, { model: 'tiny', prompt: 'the cat', options: greedy(12) });
  expect(out.placement, why(out)).toBe('browser-wasm');
  expect(out.pieces.length).toBeGreaterThan(1);
  expect(out.pieces.join('')).toBe(out.response);
  expect(out.eval_count).toBe(12);
  expect(out.done_reason).toBe('length');
  expect(out.prompt_eval_count).toBeGreaterThan(1);
  expect(out.eval_duration).toBeGreaterThan(0);
  const chat = await page.evaluate(() => (window as any).forge.chat({
    model: 'tiny', messages: [{ role: 'user', content: 'hi' }], options: { num_predict: 4 } }));
  expect(chat.placement, why(chat)).toBe('browser-wasm');
  expect(chat.message.role).toBe('assistant');
  expect(chat.eval_count).toBe(4);
  const host = await generate(page, { model: 'tiny', prompt: 'the cat', options: greedy(12), placement: 'host' });
  expect(host.placement).toBe('host');
  expect(host.pieces.join('')).toBe(host.response);
  expect(host.eval_count).toBe(12);
  expectSameOrigin(w.requests);
  expect(w.errors).toEqual([]);
});
