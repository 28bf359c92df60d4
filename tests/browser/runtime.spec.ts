// D1: the shared Python package under Pyodide, embeddings in the browser, placement and host fallback.
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { expect, test } from '@playwright/test';
import { cosine, embed, expectSameOrigin, forgeUrl, openForge, watch, why } from './helpers';

const TEXTS = [
  'hello world',
  'The quick brown fox jumps over the lazy dog near the riverbank at dawn.',
  'Pyodide runs CPython compiled to WebAssembly.',
  'a',
  'Embeddings map sentences to vectors; similar meanings land close together, which makes semantic search work '
    .repeat(3),
];

test('boots Pyodide, installs the wheel and probes the browser', async ({ page }) => {
  const w = watch(page);
  await openForge(page);
  const caps = await page.evaluate(() => (window as any).forge.capabilities());
  expect(caps.isolated).toBe(true);  // COOP/COEP from the host: wasm threads
  const wasm = caps.accelerators.find((a: any) => a.name === 'browser-wasm');
  expect(wasm.gflops).toBeGreaterThan(0.5);
  expect(wasm.threads).toBe(2);
  const gpu = caps.accelerators.find((a: any) => a.name === 'browser-webgpu');
  expect(gpu.error).toBeTruthy();  // headless without --enable-unsafe-webgpu: no adapter
  expect(caps.ranking).toEqual(['browser-wasm']);
  const py = await page.evaluate(() => (window as any).forge.pyodide.runPython(
    'import ferrousforge, sys; f"{ferrousforge.__name__} {sys.platform}"'));
  expect(py).toBe('ferrousforge emscripten');
  await expect(page.locator('#status')).toContainText('Ready');
  expectSameOrigin(w.requests);
  expect(w.errors).toEqual([]);
  await page.screenshot({ path: test.info().outputPath('ui-desktop.png'), fullPage: true });
});

test('embeds in the browser on wasm, matching the host (fp32)', async ({ page }) => {
  await openForge(page);
  const local = await embed(page, { model: 'all-minilm', input: TEXTS });
  const host = await embed(page, { model: 'all-minilm', input: TEXTS, placement: 'host' });
  expect(local.placement, why(local)).toBe('browser-wasm');
  expect(host.placement, why(host)).toBe('host');
  expect(local.embeddings).toHaveLength(TEXTS.length);
  expect(local.embeddings[0]).toHaveLength(384);
  for (let i = 0; i < TEXTS.length; i++) {
    expect(cosine(local.embeddings[i], host.embeddings[i])).toBeGreaterThanOrEqual(0.999);
  }
  expect(local.ms).toBeGreaterThan(0);
  // one text alone gives the same vector as in the padded batch
  const single = await embed(page, { model: 'all-minilm', input: TEXTS[1] });
  expect(cosine(single.embeddings[0], local.embeddings[1])).toBeGreaterThan(0.9999);
});

test('reranks in the browser like the host', async ({ page }) => {
  await openForge(page);
  const req = {
    model: 'all-minilm',
    query: 'where is the Eiffel Tower',
    documents: ['Sourdough needs wild yeast.', 'The Eiffel Tower stands in Paris.', 'Rust has no garbage collector.'],
  };
  const local = await page.evaluate((r) => (window as any).forge.rerank(r), req);
  const host = await page.evaluate((r) => (window as any).forge.rerank({ ...r, placement: 'host' }), req);
  expect(local.placement, why(local)).toBe('browser-wasm');
  expect(local.results[0].index).toBe(1);
  expect(local.results.map((r: any) => r.index)).toEqual(host.results.map((r: any) => r.index));
  for (let i = 0; i < 3; i++) {
    expect(Math.abs(local.results[i].relevance_score - host.results[i].relevance_score)).toBeLessThan(1e-3);
  }
});

test('the policy and per-request override send work to the host', async ({ page }) => {
  await openForge(page);
  const forced = await embed(page, { model: 'all-minilm', input: 'x', placement: 'host' });
  expect(forced.placement, why(forced)).toBe('host');
  expect(forced.reason).toContain('host placement requested');
  await page.evaluate(() => (window as any).forge.configure({ prefer: 'host' }));
  const preferred = await embed(page, { model: 'all-minilm', input: 'x' });
  expect(preferred.placement).toBe('host');
  expect(preferred.reason).toBe('the page prefers the host (configure)');
  await page.evaluate(() => (window as any).forge.configure({ prefer: 'browser' }));
  expect((await embed(page, { model: 'all-minilm', input: 'x' })).placement).toBe('browser-wasm');
  const bad = await page.evaluate(() => (window as any).forge.embed({ model: 'all-minilm', input: 'x', placement: 'moon' })
    .then(() => 'no error', (e: Error) => e.message));
  expect(bad).toContain('placement must be');
  const missing = await page.evaluate(() => (window as any).forge.embed({ model: 'no-such-model', input: 'x' })
    .then(() => 'no error', (e: Error) => e.message));
  expect(missing).toContain('not found');
});

test('a model over the browser memory budget runs on the host', async ({ page }) => {
  await openForge(page);
  await page.evaluate(() => (window as any).forge.configure({ budget_bytes: 64 * 2 ** 20 }));
  const out = await embed(page, { model: 'all-minilm', input: 'hello' });
  expect(out.placement, why(out)).toBe('host');
  expect(out.reason).toContain('over the browser budget');
  expect(out.embeddings[0]).toHaveLength(384);
});

test('a failing local engine is retried on the host', async ({ page }) => {
  const w = watch(page);
  // the model files arrive corrupted: the browser's load fails its digest check
  await page.route('**/api/blobs/**', (route) => route.fulfill({ status: 200, body: Buffer.alloc(4096, 7) }));
  await openForge(page);
  const out = await embed(page, { model: 'all-minilm', input: ['hello', 'world'] });
  expect(out.placement, why(out)).toBe('host');
  expect(out.fallback).toContain('browser-wasm failed');
  expect(out.embeddings).toHaveLength(2);
  expect(w.errors).toEqual([]);
  // later requests go straight to the host, without trying the broken engine again
  const again = await embed(page, { model: 'all-minilm', input: 'again' });
  expect(again.placement, why(again)).toBe('host');
  expect(again.fallback).toBeUndefined();
});

test('a second visit loads the model from the browser cache', async ({ page }) => {
  await openForge(page);
  await page.evaluate(() => (window as any).forge.clearCache());
  await page.reload();
  await page.evaluate(() => (window as any).forge.ready);
  const first = await embed(page, { model: 'all-minilm', input: 'warm me up' });
  expect(first.placement, why(first)).toBe('browser-wasm');
  const w = watch(page);
  await page.reload();
  await page.evaluate(() => (window as any).forge.ready);
  const second = await embed(page, { model: 'all-minilm', input: 'warm me up' });
  expect(second.placement, why(second)).toBe('browser-wasm');
  expect(w.requests.filter((u) => u.includes('/api/blobs/'))).toEqual([]);
  expect(cosine(first.embeddings[0], second.embeddings[0])).toBeGreaterThan(0.99999);
  const usage = await page.evaluate(() => (window as any).forge.cacheUsage());
  expect(usage.entries).toBeGreaterThanOrEqual(2);
  expect(usage.hits).toBeGreaterThanOrEqual(2);
  expect(usage.downloads).toBe(0);
});

test('no request leaves the page origin', async ({ page }) => {
  const w = watch(page);
  await openForge(page);
  await embed(page, { model: 'all-minilm', input: ['one', 'two'] });
  await page.locator('#search').click();
  await expect(page.locator('#results li')).toHaveCount(5);
  await expect(page.locator('#search-meta')).toContainText('browser-wasm');
  expectSameOrigin(w.requests);
  expect(w.requests.some((u) => u.includes('/ui/runtime/pyodide/'))).toBe(true);
});

test('the page works against a host that requires an API key', async ({ page }) => {
  const base = process.env.FORGE_KEYED_URL!;
  await openForge(page, base, '?key=test-key-1');
  const out = await embed(page, { model: 'all-minilm', input: 'secret' });
  expect(out.placement, why(out)).toBe('browser-wasm');
  const host = await embed(page, { model: 'all-minilm', input: 'secret', placement: 'host' });
  expect(cosine(out.embeddings[0], host.embeddings[0])).toBeGreaterThan(0.999);
  await page.evaluate(() => (window as any).forge.configure({ api_key: 'wrong' }));
  const refused = await page.evaluate(() => (window as any).forge.embed({ model: 'all-minilm', input: 'x', placement: 'host' })
    .then(() => 'no error', (e: Error) => e.message));
  expect(refused).toContain('API key');
  expectSameOrigin([], base);
});

test('Python in Pyodide uses the same runtime through the SDK client', async ({ page }) => {
  await openForge(page);
  const out = await page.evaluate(() => (window as any).forge.pyodide.runPythonAsync(`
from ferrousforge.browser.runtime import client
c = client()
local = await c.embed("all-minilm", ["from python"])
remote = await c.embed("all-minilm", ["from python"], placement="host")
ranked = await c.rerank("fruit", ["car", "apple"], "all-minilm")
[local["placement"], remote["placement"], len(local["embeddings"][0]), ranked[0]["index"]]
`).then((r: any) => r.toJs()));
  expect(out).toEqual(['browser-wasm', 'host', 384, 1]);
});

test('the page answers bad requests as the host does, and a wrong kind breaks no engine', async ({ page }) => {
  await openForge(page);
  const out = await page.evaluate(async () => {
    const forge = (window as any).forge;
    const fail = (p: Promise<any>) => p.then(() => 'ok', (e: any) => `${e.name} ${e.status}: ${e.message}`);
    const first = await forge.embed({ model: 'all-minilm', input: 'x', placement: 'browser-wasm' });
    return {
      kind: await fail(forge.generate({ model: 'all-minilm', prompt: 'hi', placement: 'browser-wasm' })),
      again: await forge.embed({ model: 'all-minilm', input: 'x', placement: 'browser-wasm' }),
      first: first.placement,
      long: await fail(forge.embed({ model: 'all-minilm', input: 'word '.repeat(400), truncate: false })),
      dims: await fail(forge.embed({ model: 'all-minilm', input: 'x', dimensions: 1000 })),
      threads: await fail(Promise.resolve().then(() => forge.configure({ threads: 'abc' }))),
    };
  });
  expect(out.kind).toBe("ForgeError 400: model 'all-minilm:latest' does not support generate");
  expect(out.again.placement, why(out.again)).toBe('browser-wasm');  // the engine still runs in the page
  expect(out.first).toBe('browser-wasm');
  expect(out.long).toContain('ForgeError 400: input is 402 tokens');
  expect(out.dims).toContain("ForgeError 400: 'dimensions' must be between 1 and 384");
  expect(out.threads).toContain('threads must be a whole number');
});

test('a page on another origin imports forge.mjs from the host and talks to that host', async ({ page }) => {
  // the README's "from your own page": a site of its own (a server on another port) uses the host's module
  const w = watch(page);
  const html = `<!doctype html><script type="module">
    import { install } from '${forgeUrl()}/ui/forge.mjs';
    install({ preload: ['all-minilm'] });
  </script>`;
  const server = http.createServer((_, res) => res.writeHead(200, { 'Content-Type': 'text/html' }).end(html));
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  const site = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  try {
    await page.goto(`${site}/app.html`);
    await page.waitForFunction(() => (window as any).forge?.ready);
    await page.evaluate(() => (window as any).forge.ready.then(() => true));
    const local = await embed(page, { model: 'all-minilm', input: ['hello'] });
    const host = await embed(page, { model: 'all-minilm', input: ['hello'], placement: 'host' });
    expect(local.placement, why(local)).toBe('browser-wasm');
    expect(host.placement, why(host)).toBe('host');
    expect(cosine(local.embeddings[0], host.embeddings[0])).toBeGreaterThanOrEqual(0.999);
    expect(w.requests.filter((u) => u.startsWith(site))).toEqual([`${site}/app.html`]);  // the rest from the host
    expect(w.errors).toEqual([]);
  } finally {
    server.close();
  }
});
