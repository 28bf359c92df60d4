// H2 here (node bench/browser_gpu_generate.mjs [--runs N] [--model smollm2:135m]): GGUF generation on the
// page's WebGPU with FerrousForge's decoder, on SwiftShader (--enable-unsafe-webgpu, a CPU adapter), beside
// the page's wasm engine, the host's wgpu engine (lavapipe, also a CPU adapter) and the host's llama.cpp,
// same prompt, greedy, 16 new tokens, the same page. Correctness-speed only: neither adapter is a GPU, so
// these figures are not targets. Reports the first call's load time and the median decode and prompt tok/s.
import { launch, median, openForge, startHost } from './browser_host.mjs';

const arg = (name, fallback) => (process.argv.includes(name) ? process.argv[process.argv.indexOf(name) + 1] : fallback);
const runs = Number(arg('--runs', 3));
const MODEL = arg('--model', 'smollm2:135m');
const SIDES = [
  ['browser-webgpu', { placement: 'browser-webgpu' }],
  ['browser-wasm', { placement: 'browser-wasm' }],
  ['host wgpu', { placement: 'host', engine: 'wgpu' }],
  ['host llama.cpp', { placement: 'host', engine: 'llama.cpp' }],
];

async function once(page, side, k) {
  return page.evaluate(async ({ model, side, k }) => {
    const options = { num_predict: 16, temperature: 0, num_thread: 1, ...(side.engine ? { engine: side.engine } : {}) };
    const started = performance.now();
    const r = await window.forge.generate({ model, prompt: `Note ${k}: the history of computing is`, raw: true,
      placement: side.placement, options, onToken: () => {} });
    if (r.placement !== side.placement) throw new Error(JSON.stringify({ side, placement: r.placement, fallback: r.fallback }));
    return { ms: performance.now() - started, load: r.load_duration / 1e9, decode: r.eval_count / (r.eval_duration / 1e9),
      prompt: r.prompt_eval_count / (r.prompt_eval_duration / 1e9), text: r.response };
  }, { model: MODEL, side, k });
}

const { url, proc } = await startHost(MODEL);
const browser = await launch(['--enable-unsafe-webgpu']);
try {
  const page = await openForge(browser, url);
  const out = Object.fromEntries(SIDES.map(([name]) => [name, []]));
  const first = {};
  for (const [name, side] of SIDES) first[name] = await once(page, side, 'warm');  // load + warm
  for (let i = 0; i < runs; i++) for (const [name, side] of SIDES) out[name].push(await once(page, side, i));
  console.log(`${MODEL}, greedy, 16 new tokens, medians of ${runs} runs:`);
  for (const [name] of SIDES) {
    const rs = out[name];
    console.log(`  ${name.padEnd(15)} first call ${(first[name].ms / 1000).toFixed(1)} s (load ${first[name].load.toFixed(1)} s);`
      + ` decode ${median(rs.map((r) => r.decode)).toFixed(2)} tok/s, prompt ${median(rs.map((r) => r.prompt)).toFixed(1)} tok/s`);
  }
  const same = (a, b) => out[a].every((r, i) => r.text === out[b][i].text);
  console.log(`  browser-webgpu's texts ${same('browser-webgpu', 'host wgpu') ? 'equal' : 'differ from'} host wgpu's;`
    + ` browser-wasm's ${same('browser-wasm', 'host llama.cpp') ? 'equal' : 'differ from'} host llama.cpp's`);
} finally {
  await browser.close();
  proc.kill('SIGTERM');
}
