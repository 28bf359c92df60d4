// D2 benchmark, in Chromium on this machine (node bench/browser_generate.mjs [--runs N]):
// - gemma3:270m generation and prompt tokens/s through the Pyodide Python path (forge.generate,
//   placement browser-wasm) vs wllama called directly from JS on the same file, same wasm, same
//   options (greedy, 64 new tokens, a fresh ~100-token prompt each run), with 1 and 2 threads;
// - time from page open to the first streamed token with a cold (fresh profile) and a warm cache, and
//   warm with `install({preload: [model]})` (the model read from the cache and verified while Python boots).
import { launch, median, openForge, startHost } from './browser_host.mjs';

const runs = Number(process.argv[process.argv.indexOf('--runs') + 1] || 2);
const MODEL = 'gemma3:270m';
const NEW_TOKENS = 64;
const TEXT = 'The history of computing is longer than the history of computing hardware and modern computing '
  + 'technology and includes the history of methods intended for pen and paper or for chalk and slate, with '
  + 'or without the aid of tables. Digital computing is intimately tied to the representation of numbers.';

/** One run per call: {gen, prompt} tokens/s from each side's own counters. */
async function python(page, threads, k) {
  return page.evaluate(async ({ model, threads, k, text, n }) => {
    window.forge.configure({ threads });
    const r = await window.forge.generate({ model, prompt: `Essay ${k}. ${text}`, raw: true,
      placement: 'browser', options: { num_predict: n, temperature: 0 }, onToken: () => {} });
    if (r.placement !== 'browser-wasm') throw new Error(JSON.stringify(r));
    return { gen: r.eval_count / (r.eval_duration / 1e9), prompt: r.prompt_eval_count / (r.prompt_eval_duration / 1e9) };
  }, { model: MODEL, threads, k, text: TEXT, n: NEW_TOKENS });
}

async function direct(page, threads, k) {
  return page.evaluate(async ({ threads, k, text, n }) => {
    if (window.directThreads !== threads) {
      await window.direct?.exit();
      const { Wllama } = await window.loadWllama();
      const w = new Wllama({ default: '/ui/runtime/@wllama/wllama/esm/wasm/wllama.wasm' }, { suppressNativeLog: true });
      w.setCompat(null);
      await w.loadModel([new Blob([window.modelBytes])], { n_threads: threads, n_ctx: 4096, n_batch: 512, n_gpu_layers: 0, n_parallel: 1 });
      window.direct = w; window.directThreads = threads;
    }
    let timings = null;
    await window.direct.createCompletion({ prompt: `Essay ${k}. ${text}`, n_predict: n, temperature: 0, stream: true,
      onData: (c) => { if (c.timings) timings = c.timings; } });
    return { gen: timings.predicted_per_second, prompt: timings.prompt_per_second };
  }, { threads, k, text: TEXT, n: NEW_TOKENS });
}

async function firstToken(browser, base) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const once = async (preload = []) => {
    await page.goto(`${base}/ui/bench.html`);
    return page.evaluate(async ({ model, preload }) => {
      const { install } = await window.loadForge();
      const forge = install({ preload });
      let first = 0;
      await forge.generate({ model, prompt: 'Hello', options: { num_predict: 4 },
        onToken: () => { first ||= performance.now(); } });
      return first / 1000;  // seconds since the page started loading
    }, { model: MODEL, preload });
  };
  const cold = await once();
  const warm = await once();
  const preloaded = await once([MODEL]);  // the page names the model: read and verified while Python boots
  await context.close();
  return { cold, warm, preloaded };
}

const { url, proc } = await startHost(MODEL);
const browser = await launch();
try {
  const page = await openForge(browser, url);
  await page.evaluate(async (model) => {
    const info = await (await fetch('/api/browser/model', { method: 'POST', body: JSON.stringify({ model }) })).json();
    window.modelBytes = new Uint8Array(await (await fetch(info.files.model.url)).arrayBuffer());
  }, MODEL);
  const rows = [];
  let k = 0;
  for (const threads of [1, 2]) {
    const out = { python: [], direct: [] };
    await python(page, threads, k++);  // load + warm
    await direct(page, threads, k++);
    for (let i = 0; i < runs; i++) {  // alternate, so drift hits both sides alike
      out.python.push(await python(page, threads, k++));
      out.direct.push(await direct(page, threads, k++));
    }
    await page.evaluate(async () => { await window.direct.exit(); window.direct = null; window.directThreads = 0; });
    const m = (side, key) => median(out[side].map((r) => r[key]));
    rows.push({ threads, gen: [m('python', 'gen'), m('direct', 'gen')], prompt: [m('python', 'prompt'), m('direct', 'prompt')],
      all: out });
  }
  for (const r of rows) {
    console.log(`threads ${r.threads}: generation ${r.gen[0].toFixed(1)} vs ${r.gen[1].toFixed(1)} tok/s`
      + ` (${(r.gen[0] / r.gen[1]).toFixed(2)}x); prompt ${r.prompt[0].toFixed(1)} vs ${r.prompt[1].toFixed(1)} tok/s`
      + ` (${(r.prompt[0] / r.prompt[1]).toFixed(2)}x)`);
    console.log('  runs', JSON.stringify(r.all.python.map((x) => x.gen.toFixed(1))), 'vs', JSON.stringify(r.all.direct.map((x) => x.gen.toFixed(1))));
  }
  const t = await firstToken(browser, url);
  console.log(`page open to first token: cold ${t.cold.toFixed(2)} s, warm ${t.warm.toFixed(2)} s,`
    + ` warm with preload ${t.preloaded.toFixed(2)} s`);
} finally {
  await browser.close();
  proc.kill('SIGTERM');
}
