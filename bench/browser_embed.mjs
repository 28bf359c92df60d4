// D1 benchmark, in Chromium on this machine (node bench/browser_embed.mjs [--runs N]):
// - embeddings/s through the Pyodide Python path (forge.embed, placement browser-wasm) vs raw
//   transformers.js (pipeline 'feature-extraction') on the same model file, dtype and thread count
//   (2 threads, the plain ort-wasm-simd-threaded build for both), batch 1 / 8 / 32;
// - cold start (fresh profile) and warm start (cached model + probe) to the first embedding;
// - host fallback latency: forge.embed({placement: 'host'}) vs a direct fetch of /api/embed.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { launch, root, startHost } from './browser_host.mjs';

const runs = Number(process.argv[process.argv.indexOf('--runs') + 1] || 2);

/** The store's files laid out as transformers.js expects a model folder (config, tokenizer, onnx/). */
async function hfFolder(url, model, folder) {
  const info = await (await fetch(`${url}/api/browser/model`, { method: 'POST', body: JSON.stringify({ model }) })).json();
  const dir = join(root, 'build/runtime/bench-model', folder);
  mkdirSync(join(dir, 'onnx'), { recursive: true });
  const get = async (f) => Buffer.from(await (await fetch(url + info.files[f].url)).arrayBuffer());
  writeFileSync(join(dir, 'onnx/model.onnx'), await get('model'));
  writeFileSync(join(dir, 'tokenizer.json'), await get('tokenizer.json'));
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ model_max_length: 256, do_lower_case: true, pad_token: '[PAD]', cls_token: '[CLS]', sep_token: '[SEP]', unk_token: '[UNK]', mask_token: '[MASK]', tokenizer_class: 'BertTokenizer' }));
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ model_type: 'bert', hidden_size: 384 }));
}

const SENTENCES = Array.from({ length: 64 }, (_, i) =>
  `Sentence number ${i} talks about ${['rivers', 'compilers', 'bread', 'music', 'orbits', 'gardens'][i % 6]} ` +
  `and how they change over ${i % 7 + 2} long years of careful study.`);

async function throughput(page, which, model, batch) {
  return page.evaluate(async ({ which, model, batch, sentences }) => {
    const run = which === 'python'
      ? async (b) => { const r = await window.forge.embed({ model: model.name, input: b, placement: 'browser' }); if (r.placement !== 'browser-wasm') throw new Error(r.placement + r.fallback); }
      : async (b) => { await window.extractor(b, { pooling: 'mean', normalize: true }); };
    await run(sentences.slice(0, batch));  // warm-up
    const t0 = performance.now();
    let n = 0;
    while (n < sentences.length) { const b = sentences.slice(n, n + batch); await run(b); n += b.length; }
    return n / ((performance.now() - t0) / 1000);
  }, { which, model, batch, sentences: SENTENCES });
}

async function setup(page, base, which, model) {
  await page.goto(`${base}/ui/bench.html`);
  await page.evaluate(async ({ which, model }) => {
    if (which === 'python') {
      const { install } = await window.loadForge();
      await install({}).ready;
    } else {
      const t = await window.loadTransformers();
      t.env.allowRemoteModels = false;
      t.env.allowLocalModels = true;
      t.env.useBrowserCache = false;
      t.env.localModelPath = '/ui/runtime/bench-model/';
      t.env.backends.onnx.wasm.wasmPaths = '/ui/runtime/onnxruntime-web/dist/';
      t.env.backends.onnx.wasm.numThreads = 2;
      window.extractor = await t.pipeline('feature-extraction', model.folder, { dtype: 'fp32', device: 'wasm' });
    }
  }, { which, model });
}

async function startTimes(browser, base) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const measure = async () => page.evaluate(async () => {
    await window.forge.ready;
    await window.forge.embed({ model: 'all-minilm', input: 'first' });
    return performance.now();  // since navigation start
  });
  await page.goto(`${base}/ui/`);
  const cold = await measure();
  await page.reload();
  const warm = await measure();
  await context.close();
  return { cold, warm };
}

async function fallback(browser, base) {
  const page = await browser.newPage();
  await page.goto(`${base}/ui/`);
  const out = await page.evaluate(async () => {
    await window.forge.ready;
    const median = (xs) => xs.sort((a, b) => a - b)[xs.length >> 1];
    const body = JSON.stringify({ model: 'all-minilm', input: 'hello there' });
    const direct = [], viaForge = [];
    for (let i = 0; i < 40; i++) {
      let t = performance.now();
      await (await fetch('/api/embed', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body })).json();
      direct.push(performance.now() - t);
      t = performance.now();
      await window.forge.embed({ model: 'all-minilm', input: 'hello there', placement: 'host' });
      viaForge.push(performance.now() - t);
    }
    return { direct: median(direct.slice(5)), forge: median(viaForge.slice(5)) };
  });
  await page.close();
  return out;
}

const host = await startHost('all-minilm,all-minilm:int8');
const models = [
  { name: 'all-minilm', folder: 'minilm-fp32', label: 'fp32' },
  { name: 'all-minilm:int8', folder: 'minilm-int8', label: 'int8' },
];
for (const m of models) await hfFolder(host.url, m.name, m.folder);
const browser = await launch();
try {
  const results = {};
  for (let r = 0; r < runs; r++) {
    for (const model of models) {
      for (const which of r % 2 ? ['raw', 'python'] : ['python', 'raw']) {  // alternate the order
        const page = await browser.newPage();
        await setup(page, host.url, which, model);
        for (const batch of [1, 8, 32]) {
          const key = `${model.label} batch ${batch} ${which}`;
          (results[key] ??= []).push(await throughput(page, which, model, batch));
        }
        await page.close();
      }
    }
  }
  const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
  for (const model of models) {
    for (const batch of [1, 8, 32]) {
      const py = mean(results[`${model.label} batch ${batch} python`]);
      const raw = mean(results[`${model.label} batch ${batch} raw`]);
      console.log(`${model.label} batch ${batch}: python path ${py.toFixed(1)} emb/s, raw transformers.js ${raw.toFixed(1)} emb/s, ratio ${(py / raw).toFixed(2)}x`);
    }
  }
  const starts = [];
  for (let r = 0; r < runs; r++) starts.push(await startTimes(browser, host.url));
  console.log(`start to first embedding: cold ${starts.map((s) => (s.cold / 1000).toFixed(2)).join(', ')} s; warm ${starts.map((s) => (s.warm / 1000).toFixed(2)).join(', ')} s`);
  const fb = await fallback(browser, host.url);
  console.log(`host fallback: forge.embed(placement host) ${fb.forge.toFixed(1)} ms vs direct fetch ${fb.direct.toFixed(1)} ms: overhead ${(fb.forge - fb.direct).toFixed(1)} ms (median of 35)`);
} finally {
  await browser.close();
  host.proc.kill('SIGTERM');
}
