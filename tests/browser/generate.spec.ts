// D2: GGUF generation in the browser (llama.cpp in wasm via wllama, driven from Python), placement,
// host fallback, the browser model cache.
import { expect, test } from '@playwright/test';
import { abortAfter, expectSameOrigin, forgeUrl, generate, greedy, openForge, watch, why } from './helpers';

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
  const sdk = await page.evaluate(() => (window as any).forge.pyodide.runPythonAsync(`
from ferrousforge.browser.runtime import client
pieces = []
out = await client().generate("tiny", "the cat", on_token=pieces.append, options={"num_predict": 12, "temperature": 0})
[out["placement"], out["response"], "".join(pieces)]
`).then((r: any) => r.toJs()));
  expect(sdk).toEqual(['browser-wasm', out.response, out.response]);  // the Python SDK in the page, same answer
  const host = await generate(page, { model: 'tiny', prompt: 'the cat', options: greedy(12), placement: 'host' });
  expect(host.placement).toBe('host');
  expect(host.pieces.join('')).toBe(host.response);
  expect(host.eval_count).toBe(12);
  expectSameOrigin(w.requests);
  expect(w.errors).toEqual([]);
});

test('an AbortSignal stops a generation in the page and on the host; the next one runs', async ({ page }) => {
  await openForge(page);
  await page.evaluate(() => (window as any).forge.configure({ threads: 1 }));
  for (const placement of ['browser-wasm', 'host']) {
    // left alone it would run for thousands of tokens (greedy: the tiny model never says its end token)
    const req = { model: 'tiny', prompt: 'the cat', placement, options: { num_predict: 100_000, temperature: 0 } };
    const out = await abortAfter(page, req, 3);
    expect(out.error, placement).toBe('AbortError');
    expect(out.pieces, placement).toBe(3);  // nothing reaches onToken after the abort
    expect(out.already, placement).toBe('AbortError');  // an already aborted signal: refused at once
    expect(out.next.placement, placement).toBe(placement);
    expect(out.next.eval_count, placement).toBe(4);
  }
});

test('gemma3:270m in the browser: greedy tokens match the host, chat through the shared template', async ({ page }) => {
  test.setTimeout(240_000);
  await openForge(page);
  await page.evaluate(() => (window as any).forge.configure({ threads: 1 }));
  const prompt = { model: 'gemma3:270m', prompt: 'The history of computing', raw: true, options: greedy(16) };
  const local = await generate(page, prompt);
  const host = await generate(page, { ...prompt, placement: 'host' });
  expect(local.placement, why(local)).toBe('browser-wasm');
  expect(host.placement).toBe('host');
  expect(local.eval_count).toBe(16);
  expect(local.response).toBe(host.response);  // the same 16 tokens (wasm and AVX kernels agree this far)
  const chat = await page.evaluate(() => (window as any).forge.chat({
    model: 'gemma3:270m', messages: [{ role: 'user', content: 'What is the capital of France?' }],
    options: { num_predict: 7, temperature: 0 } }));
  const hostChat = await page.evaluate(() => (window as any).forge.chat({
    model: 'gemma3:270m', messages: [{ role: 'user', content: 'What is the capital of France?' }],
    options: { num_predict: 7, temperature: 0 }, placement: 'host' }));
  expect(chat.placement, why(chat)).toBe('browser-wasm');
  expect(chat.prompt_eval_count).toBe(hostChat.prompt_eval_count);  // the same template, the same prompt
  // a base model: the same greedy reply, not wisdom. Seven tokens: the host's eighth is a near tie
  // (log-probabilities -4.503, -4.535, -4.548), which wasm's and AVX's sums can break either way
  expect(chat.message.content).toBe(hostChat.message.content);
});

test('without cross-origin isolation a model over the single-thread budget goes to the host', async ({ page }) => {
  await openForge(page, forgeUrl(), '?isolated=0');
  const caps = await page.evaluate(() => (window as any).forge.capabilities());
  expect(caps.isolated).toBe(false);
  const big = await generate(page, { model: 'gemma3:270m', prompt: 'Hi', options: greedy(3) });
  expect(big.placement, why(big)).toBe('host');
  expect(big.reason).toContain('not cross-origin isolated');
  expect(big.pieces.join('')).toBe(big.response);  // streamed from the host the same way
  const small = await generate(page, { model: 'tiny', prompt: 'the', options: greedy(3) });
  expect(small.placement, why(small)).toBe('browser-wasm');  // 0.5 MB: fine on one thread
});

test('a model over the memory budget runs on the host', async ({ page }) => {
  await openForge(page);
  await page.evaluate(() => (window as any).forge.configure({ budget_bytes: 64 << 20 }));
  const out = await generate(page, { model: 'gemma3:270m', prompt: 'Hi', options: greedy(2) });
  expect(out.placement, why(out)).toBe('host');
  expect(out.reason).toContain('over the browser budget');
});

test('model files: a second visit loads from the cache; a corrupt cached copy is fetched again', async ({ page }) => {
  const info = await (await page.request.post(`${forgeUrl()}/api/browser/model`, { data: { model: 'tiny' } })).json();
  const url = new URL(info.files.model.url, forgeUrl()).href;
  /** Open the page, generate with the tiny GGUF in the browser: the answer and the model's downloads. */
  const visit = async () => {
    const w = watch(page);
    await openForge(page);
    await page.evaluate(() => (window as any).forge.configure({ threads: 1 }));
    const out = await generate(page, { model: 'tiny', prompt: 'a', options: greedy(2) });
    expect(out.placement, why(out)).toBe('browser-wasm');
    return { response: out.response, downloads: w.requests.filter((u) => u === url).length };
  };
  await openForge(page);
  await page.evaluate(() => (window as any).forge.clearCache());
  const first = await visit();
  expect(first.downloads).toBe(1);
  expect(await visit()).toEqual({ response: first.response, downloads: 0 });  // from the cache
  // corrupt the cached GGUF: it is evicted, downloaded again and verified; the answer is unchanged
  await page.evaluate(async (u) => {
    await (await caches.open('ferrousforge-blobs-v1')).put(u, new Response(new Uint8Array(1000)));
  }, url);
  expect(await visit()).toEqual({ response: first.response, downloads: 1 });
});

test('the demo page: chat and search driven by clicks, at desktop and phone widths', async ({ page }) => {
  const w = watch(page);
  await openForge(page);
  await page.locator('#chat-model').selectOption('tiny:latest');
  await page.locator('#placement').selectOption('browser');
  await page.locator('#chat-input').fill('hello there');
  await page.locator('#send').click();
  const reply = page.locator('.msg.assistant').last();
  await expect(reply.locator('.badge')).toHaveText('browser-wasm', { timeout: 60_000 });
  await expect(reply.locator('.meta')).toContainText('tokens/s');
  await page.locator('#placement').selectOption('host');
  await page.locator('#chat-input').fill('and again');
  await page.locator('#send').click();
  await expect(page.locator('.msg.assistant').nth(1).locator('.badge')).toHaveText('host', { timeout: 60_000 });
  // Stop: the answer ends where it was, kept; the next question is answered
  await page.locator('#chat-model').selectOption('gemma3:270m');  // a base model: it writes on and on
  await page.locator('#chat-input').fill('Tell me a long story');
  await page.locator('#send').click();
  const story = page.locator('.msg.assistant').nth(2);
  await expect(story.locator('span').first()).not.toHaveText('…', { timeout: 60_000 });
  await page.locator('#chat-input').fill('a second question while it writes');
  await page.locator('#chat-input').press('Enter');  // one answer at a time: not sent
  await expect(page.locator('.msg.user')).toHaveCount(3);
  await page.locator('#chat-input').fill('');
  await page.locator('#stop').click();
  await expect(story.locator('.meta')).toHaveText('stopped');
  await expect(page.locator('#send')).toBeVisible();
  await expect(page.locator('#stop')).toBeHidden();
  await page.locator('#chat-model').selectOption('tiny:latest');
  await page.locator('#chat-input').fill('one more');
  await page.locator('#send').click();
  await expect(page.locator('.msg.assistant').nth(3).locator('.badge')).toHaveText('host', { timeout: 60_000 });
  await page.locator('#query').press('Enter');  // Enter searches, as the button does
  await expect(page.locator('#results li')).toHaveCount(5, { timeout: 60_000 });
  await expect(page.locator('#search-meta')).toContainText('embeddings/s');
  await expect(page.locator('#cache-usage')).toContainText('MiB');
  await page.screenshot({ path: test.info().outputPath('ui-desktop-chat.png'), fullPage: true });
  await page.setViewportSize({ width: 390, height: 844 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  expect(overflow).toBeLessThanOrEqual(0);  // nothing wider than a phone
  await page.screenshot({ path: test.info().outputPath('ui-phone.png'), fullPage: true });
  expectSameOrigin(w.requests);
  expect(w.errors).toEqual([]);
});

test('a chat with an image goes to the host, whose vision model sees it', async ({ page }) => {
  await openForge(page);
  const image = await page.evaluate(async () => {  // a PNG drawn in the page, as a web app would send one
    const canvas = new OffscreenCanvas(40, 30);
    const ctx = canvas.getContext('2d')!;
    ctx.fillStyle = '#c03';
    ctx.fillRect(0, 0, 40, 30);
    ctx.fillStyle = '#3c9';
    ctx.fillRect(10, 5, 20, 20);
    const bytes = new Uint8Array(await (await canvas.convertToBlob({ type: 'image/png' })).arrayBuffer());
    return btoa(Array.from(bytes, (b) => String.fromCharCode(b)).join(''));
  });
  const ask = (images: string[]) => ({
    model: 'tiny-vision', messages: [{ role: 'user', content: 'what is this?', images }], options: greedy(8) });
  const chat = await page.evaluate((r) => (window as any).forge.chat(r), ask([image]));
  expect(chat.placement, why(chat)).toBe('host');
  const direct = await (await fetch(forgeUrl() + '/api/chat', {
    method: 'POST', body: JSON.stringify({ ...ask([image]), stream: false }) })).json();
  expect(chat.message.content).toBe(direct.message.content);  // the image reached the host's model
  const plain = await page.evaluate((r) => (window as any).forge.chat(r), ask([]));
  expect(chat.prompt_eval_count).toBeGreaterThanOrEqual(plain.prompt_eval_count + 4);  // its 4 embeddings
});

test('what only the host runs is a 400 when the page is told to run it; num_predict 0 says nothing', async ({ page }) => {
  await openForge(page);
  await page.evaluate(() => (window as any).forge.configure({ threads: 1 }));
  const out = await page.evaluate(async () => {
    const forge = (window as any).forge;
    const fail = (p: Promise<any>) => p.then((r: any) => `ok ${r.placement}`, (e: any) => `${e.status}: ${e.message}`);
    const chat = { model: 'tiny', messages: [{ role: 'user', content: 'hi' }], options: { num_predict: 4 } };
    return {
      json: await fail(forge.chat({ ...chat, format: 'json', placement: 'browser-wasm' })),
      auto: await fail(forge.chat({ ...chat, format: 'json' })),
      scored: await forge.generate({ model: 'tiny', prompt: 'the cat', options: { num_predict: 3 }, logprobs: true, top_logprobs: 2 }),
      scoredHere: await fail(forge.generate({ model: 'tiny', prompt: 'x', logprobs: true, placement: 'browser-wasm' })),
      none: await forge.generate({ model: 'tiny', prompt: 'the cat', options: { num_predict: 0 }, placement: 'browser-wasm' }),
      prefill: await forge.chat({ ...chat, messages: [...chat.messages, { role: 'assistant', content: 'the cat' }],
        options: { num_predict: 4, temperature: 0 } }),
      raw: await forge.generate({ model: 'tiny', raw: true, options: { num_predict: 4, temperature: 0 },
        prompt: '<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nthe cat' }),
    };
  });
  expect(out.json).toContain("400: format, tools, context, suffix, images, logprobs and logit_bias run on the host's engine");
  expect(out.auto).toBe('ok host');
  // logprobs: placed on the host, which streams them with each piece; the answer carries them all
  expect(out.scored.placement).toBe('host');
  expect(out.scored.logprobs.length).toBe(out.scored.eval_count);
  expect(out.scored.logprobs[0].top_logprobs.length).toBe(2);
  expect(out.scoredHere).toContain('400: format');
  expect([out.none.response, out.none.eval_count, out.none.placement]).toEqual(['', 0, 'browser-wasm']);
  expect(out.prefill.placement).toBe('browser-wasm');  // a final assistant message is continued, as on the host
  expect(out.prefill.message.content).toBe(out.raw.response);
  // a new thread count while a generation runs: it finishes, and the next one loads with the new count
  const moved = await page.evaluate(async () => {
    const forge = (window as any).forge;
    let n = 0;
    const out = await forge.generate({ model: 'tiny', prompt: 'the cat', options: { num_predict: 24, temperature: 0 },
      onToken: () => { if (++n === 3) forge.configure({ threads: 2 }); } });
    const next = await forge.generate({ model: 'tiny', prompt: 'the cat', options: { num_predict: 2 } });
    return [out.eval_count, out.placement, next.eval_count, next.placement];
  });
  expect(moved).toEqual([24, 'browser-wasm', 2, 'browser-wasm']);
});

test('generations at once on one in-page model take turns, each its own answer', async ({ page }) => {
  await openForge(page);
  const out = await page.evaluate(async () => {
    const forge = (window as any).forge;
    const r = { model: 'tiny', options: { num_predict: 8, temperature: 0 }, placement: 'browser' };
    const alone = await forge.generate({ ...r, prompt: 'a dog' });
    const both = await Promise.all([forge.generate({ ...r, prompt: 'the cat' }), forge.generate({ ...r, prompt: 'a dog' })]);
    return { alone: alone.response, both: both.map((x: any) => [x.eval_count, x.placement, x.response]) };
  });
  expect(out.both[0].slice(0, 2)).toEqual([8, 'browser-wasm']);  // (two at once used to hang wllama)
  expect(out.both[1]).toEqual([8, 'browser-wasm', out.alone]);
});
