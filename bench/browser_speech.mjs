// I benchmark, in Chromium on this machine
// (node bench/browser_speech.mjs [--runs N] [--models whisper:tiny.en,whisper:base] [--webgpu]):
// - transcription real-time factor (processing s / audio s) of a Piper-spoken passage: the page's Whisper
//   (forge.transcribe, placement browser-wasm, model loaded) vs the host's (placement host: the same
//   samples posted by the page to /v1/audio/transcriptions), alternating, greedy, language en on both sides;
// - with --webgpu, Chromium has WebGPU (here SwiftShader): the first in-page call measures wasm against
//   WebGPU (ferrousforge.browser.runtime's race) and its reason is printed;
// - synthesis of the same passage: seconds of audio per second and time to the first audio (the first
//   sentence made in the page, or the first bytes of the host's pcm stream), browser vs host;
// - each side's first (cold: download from the cache, sessions) call, reported apart.
import { launch, median, openForge, startHost } from './browser_host.mjs';

const arg = (name, fallback) => (process.argv.includes(name) ? process.argv[process.argv.indexOf(name) + 1] : fallback);
const runs = Number(arg('--runs', 3));
const WHISPERS = arg('--models', 'whisper:tiny.en').split(',');
const VOICE = 'piper:joe';
const PASSAGE = 'My sister planted seven tomato plants in the garden. They grew tall during the summer, and by '
  + 'August the vines were heavy with fruit. Every morning she carried a basket outside and picked the ripest '
  + 'ones. Our neighbours received so many tomatoes that they started to make sauce.';

async function transcribe(page, model, placement) {
  return page.evaluate(async ({ model, placement }) => {
    const r = await window.forge.transcribe({ model, audio: window.passage, placement, language: 'en' });
    if (r.placement !== (placement === 'host' ? 'host' : 'browser-wasm')) throw new Error(JSON.stringify(r));
    return { rtf: r.rtf, text: r.text, duration: r.duration, reason: r.reason };
  }, { model, placement });
}

async function speak(page, placement) {
  return page.evaluate(async ({ model, text, placement }) => {
    const r = await window.forge.speak({ model, input: text, placement });
    if (r.placement !== (placement === 'host' ? 'host' : 'browser-wasm')) throw new Error(JSON.stringify(r));
    return { perS: r.audio_per_s, first: r.first_audio_ms, duration: r.duration };
  }, { model: VOICE, text: PASSAGE, placement });
}

const { url, proc } = await startHost([...WHISPERS, VOICE].join(','));
const browser = await launch(process.argv.includes('--webgpu') ? ['--enable-unsafe-webgpu'] : []);
try {
  const page = await openForge(browser, url);
  const threads = await page.evaluate(async ({ voice, text }) => {
    const wav = await fetch('/v1/audio/speech', {
      method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ model: voice, input: text, response_format: 'wav' }),
    });
    window.passage = new Uint8Array(await wav.arrayBuffer());
    return (await window.forge.capabilities()).accelerators.find((a) => a.name === 'browser-wasm')?.threads;
  }, { voice: VOICE, text: PASSAGE });
  console.log(`Chromium ${browser.version()}, browser-wasm ${threads} threads, host 1 thread (serve_host.py)`);

  for (const model of WHISPERS) {
    const cold = { browser: await transcribe(page, model, 'browser'), host: await transcribe(page, model, 'host') };
    const out = { browser: [], host: [] };
    for (let i = 0; i < runs; i++) {  // alternate, so drift hits both sides alike
      out.browser.push(await transcribe(page, model, 'browser'));
      out.host.push(await transcribe(page, model, 'host'));
    }
    const b = median(out.browser.map((r) => r.rtf)), h = median(out.host.map((r) => r.rtf));
    console.log(`${model}, ${cold.browser.duration.toFixed(1)} s passage: RTF browser ${b.toFixed(3)} vs host ${h.toFixed(3)}`
      + ` (browser speed ${(h / b).toFixed(2)}x the host's); first call browser ${cold.browser.rtf.toFixed(3)},`
      + ` host ${cold.host.rtf.toFixed(3)}; same text: ${out.browser[0].text === out.host[0].text ? 'yes' : 'no'}`);
    console.log('  browser', JSON.stringify(out.browser.map((r) => r.rtf.toFixed(3))), 'host', JSON.stringify(out.host.map((r) => r.rtf.toFixed(3))));
    console.log(`  placed: ${cold.browser.reason}`);
    if (out.browser[0].text !== out.host[0].text) console.log(`  browser: ${out.browser[0].text}\n  host:    ${out.host[0].text}`);
  }

  const cold = { browser: await speak(page, 'browser'), host: await speak(page, 'host') };
  const out = { browser: [], host: [] };
  for (let i = 0; i < runs; i++) {
    out.browser.push(await speak(page, 'browser'));
    out.host.push(await speak(page, 'host'));
  }
  const m = (side, key) => median(out[side].map((r) => r[key]));
  console.log(`${VOICE}, ${out.browser[0].duration.toFixed(1)} s of speech: browser ${m('browser', 'perS').toFixed(2)} vs host`
    + ` ${m('host', 'perS').toFixed(2)} s of audio/s (${(m('browser', 'perS') / m('host', 'perS')).toFixed(2)}x);`
    + ` first audio browser ${m('browser', 'first').toFixed(0)} ms vs host ${m('host', 'first').toFixed(0)} ms;`
    + ` first call browser ${cold.browser.perS.toFixed(2)} s/s (first audio ${cold.browser.first.toFixed(0)} ms),`
    + ` host ${cold.host.perS.toFixed(2)} s/s (${cold.host.first.toFixed(0)} ms)`);
  console.log('  browser', JSON.stringify(out.browser.map((r) => r.perS.toFixed(2))), 'host', JSON.stringify(out.host.map((r) => r.perS.toFixed(2))));
} finally {
  await browser.close();
  proc.kill('SIGTERM');
}
