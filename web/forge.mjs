// FerrousForge in the browser: boots Pyodide, installs the shared `ferrousforge` wheel, and exposes
// the Python runtime (ferrousforge.browser.runtime) as `window.forge`:
//   await forge.ready; forge.capabilities(); forge.embed({model, input, placement});
//   forge.rerank({model, query, documents, placement}); forge.configure({prefer, api_key, budget_bytes, threads})
//   forge.generate({model, prompt, options, placement, onToken, signal}); forge.chat({model, messages, ...})
//   forge.transcribe({model, audio, language, placement}): audio a File/Blob/ArrayBuffer or 16 kHz Float32Array
//   forge.speak({model, input, voice, speed, placement, onAudio}): {audio: Float32Array, sample_rate, wav: Blob, ...}
// Every file comes from this origin (the host's /ui/runtime/ bundle): nothing from a CDN.
import * as gpu from './gpu.mjs';
import * as kernels from './kernels.mjs';
import * as piper from './piper.mjs';
import * as whisper from './whisper.mjs';
import * as wllama from './wllama.mjs';

const runtimeURL = new URL('./runtime/', import.meta.url).href;
// The host this module came from: a page on another origin that imports it talks to that host
const hostURL = new URL(import.meta.url).origin;
const ortModules = {};
let tokenizers = null;

/** onnxruntime-web for one execution provider: the plain SIMD+threads build for wasm, the WebGPU build. */
async function loadOrt(ep, threads) {
  if (!ortModules[ep]) {
    const file = ep === 'webgpu' ? 'ort.webgpu.min.mjs' : 'ort.wasm.min.mjs';
    const ort = await import(`${runtimeURL}onnxruntime-web/dist/${file}`);
    ort.env.wasm.wasmPaths = `${runtimeURL}onnxruntime-web/dist/`;
    ort.env.wasm.numThreads = threads;  // explicit: its default depends on the browser
    ort.env.wasm.proxy = false;
    ort.env.logLevel = 'error';
    ortModules[ep] = ort;
  }
  return ortModules[ep];
}

async function loadTokenizers() {
  tokenizers ??= await import(`${runtimeURL}@huggingface/tokenizers/dist/tokenizers.min.mjs`);
  return tokenizers;
}

/** Threads for the wasm EP: all cores up to 4 when cross-origin isolated, else 1 (one place decides). */
function wasmThreads() {
  return self.crossOriginIsolated ? Math.max(1, Math.min(navigator.hardwareConcurrency || 1, 4)) : 1;
}

const CACHE = 'ferrousforge-blobs-v1';
const blobStats = { hits: 0, downloads: 0, disabled: '' };  // this page's; `disabled`: why caching is off

/** A model file's bytes, verified by sha256: a verified cached copy, else downloaded, verified and
 *  cached. A corrupt cached copy is replaced; a storage error (quota) turns caching off, never fails. */
async function fetchBlob(url, digest, headers) {
  url = new URL(url, location.href).href;
  const cache = blobStats.disabled ? null
    : await caches.open(CACHE).catch((err) => { blobStats.disabled = String(err); return null; });
  const hit = cache && await cache.match(url);
  if (hit) {
    const bytes = new Uint8Array(await hit.arrayBuffer());
    if (`sha256:${await kernels.sha256(bytes)}` === digest) { blobStats.hits++; return bytes; }
    await cache.delete(url);
  }
  const response = await fetch(url, { headers });
  if (!response.ok) throw new Error(`fetching ${url} failed: HTTP ${response.status}`);
  blobStats.downloads++;
  const bytes = await readWithProgress(response, url);
  if (`sha256:${await kernels.sha256(bytes)}` !== digest) {
    throw new Error(`downloaded file does not match its digest ${digest}`);
  }
  if (cache) {
    const stored = new Response(bytes, { headers: { 'Content-Type': 'application/octet-stream' } });
    await cache.put(url, stored).catch((err) => { blobStats.disabled = `cache write failed: ${err}`; });
  }
  return bytes;
}

/** The body's bytes; progress goes to `forge-download` events ({url, loaded, total}) for the page. */
async function readWithProgress(response, url) {
  const total = Number(response.headers.get('Content-Length')) || 0;
  const bytes = new Uint8Array(total);
  const parts = [];
  let loaded = 0, last = 0;
  const report = (done = false) => dispatchEvent(new CustomEvent('forge-download', { detail: { url, loaded, total, done } }));
  report();
  for (const reader = response.body.getReader(); ;) {
    const { value, done } = await reader.read();
    if (done) break;
    if (loaded + value.length <= total) bytes.set(value, loaded); else parts.push(value);
    loaded += value.length;
    if (performance.now() - last > 100) { last = performance.now(); report(); }
  }
  report(true);
  if (loaded === total) return bytes;
  const whole = new Uint8Array(loaded);  // no or a wrong Content-Length: join what came
  let at = 0;
  for (const part of [bytes.subarray(0, Math.min(total, loaded)), ...parts]) { whole.set(part, at); at += part.length; }
  return whole;
}

const prefetched = new Map();  // digest → Promise<Uint8Array | null>

/** Start fetching (cache first) and verifying a model's files, and warming onnxruntime-web, while
 *  Pyodide boots: the page names the models it will use (`preload`); Python picks them up by digest. */
function preload(models, settings) {
  const headers = settings.api_key ? { Authorization: `Bearer ${settings.api_key}` } : {};
  loadOrt('wasm', wasmThreads()).catch(() => {});
  for (const model of models) {
    const info = fetch(`${settings.host}/api/browser/model`, {
      method: 'POST', headers: { 'Content-Type': 'application/json', ...headers }, body: JSON.stringify({ model }),
    }).then((r) => (r.ok ? r.json() : null)).catch(() => null);
    info.then((i) => {
      if (!i) return;
      for (const file of Object.values(i.files)) {
        prefetched.set(file.digest, fetchBlob(`${settings.host}${file.url}`, file.digest, headers).catch(() => null));
      }
    });
  }
}

/** A preloaded file's verified bytes (or null): taken once. */
async function takePrefetched(digest) {
  const bytes = prefetched.get(digest);
  prefetched.delete(digest);
  return bytes ? await bytes : null;
}

/** POST `body` and hand each NDJSON line (parsed) to onLine; the last line is returned. An aborted
 *  `signal` ends the request (the host stops generating when its client goes). */
async function streamLines(url, headers, body, onLine, signal) {
  const response = await fetch(url, {
    method: 'POST', headers: { 'Content-Type': 'application/json', ...headers }, body: JSON.stringify(body),
    signal: signal ?? undefined,
  });
  if (!response.ok) {
    const data = await response.json().catch(() => ({}));
    return { error: data.error ?? `HTTP ${response.status}`, status: response.status };
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '', last = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (value) buffer += value;
    const lines = buffer.split('\n');
    buffer = done ? '' : lines.pop();
    for (const line of lines) {
      signal?.throwIfAborted();  // a read may hold many lines: none is handed on after an abort
      if (!line.trim()) continue;
      last = JSON.parse(line);
      if (last.error) return { error: last.error, status: 500 };
      onLine(last);
    }
    if (done) return last;
  }
}

export class ForgeError extends Error {
  constructor(message, status) { super(message); this.name = 'ForgeError'; this.status = status; }
}

/** Python result (a PyProxy of a dict) → plain JS, freeing the proxy. */
function toJs(value) {
  if (value && typeof value.toJs === 'function') {
    const out = value.toJs({ dict_converter: Object.fromEntries, create_pyproxies: false });
    value.destroy();
    return out;
  }
  return value;
}

function pythonError(err) {
  // a Python exception arrives as PythonError with the whole traceback: keep its last line
  const text = String(err?.message ?? err);
  const last = text.trim().split('\n').pop();
  const m = /^(?:[\w.]+\.)?(\w+): (.*)$/s.exec(last);
  const kind = m ? m[1] : '';
  const status = /NotFound/.test(kind) ? 404 : /Unavailable/.test(kind) ? 503
    : /BadRequest|NotSupported|HostError/.test(kind) ? 400 : 500;
  return new ForgeError(m ? m[2] : last, status);
}

export async function boot(settings = {}) {
  settings = { ...settings, host: String(settings.host || hostURL).replace(/\/+$/, '') };
  const t0 = performance.now();
  if (settings.preload?.length) preload(settings.preload, settings);
  const assets = await (await fetch(`${runtimeURL}assets.json`)).json();
  performance.mark('forge:assets');
  const { loadPyodide } = await import(`${runtimeURL}pyodide/pyodide.mjs`);
  const pyodide = await loadPyodide({ indexURL: `${runtimeURL}pyodide/` });
  performance.mark('forge:pyodide');
  const wheel = await fetch(`${runtimeURL}${assets.wheel}`);
  pyodide.unpackArchive(await wheel.arrayBuffer(), 'wheel');
  const deps = await fetch(`${runtimeURL}${assets.python_deps}`);  // jinja2 for chat templates
  pyodide.unpackArchive(await deps.arrayBuffer(), 'zip');
  pyodide.registerJsModule('forge_js', {
    kernels, gpu, wllama, whisper, piper, streamLines, loadOrt, loadTokenizers, runtimeURL, wasmThreads, fetchBlob, blobStats, takePrefetched, CACHE,
  });
  const runtime = pyodide.pyimport('ferrousforge.browser.runtime');
  performance.mark('forge:imported');
  const py = await runtime.start({ ...settings, preload: undefined, runtime_url: runtimeURL, probe: assets.probe });
  performance.mark('forge:probed');
  const call = (name) => async (arg = {}) => {
    try { return toJs(await py[name](arg)); } catch (err) { throw pythonError(err); }
  };
  // generate and chat take an AbortSignal (`signal`): aborted, the engine stops and the call rejects
  // with the signal's reason (an AbortError), as fetch does
  const cancellable = (name) => async (arg = {}) => {
    const signal = arg.signal;
    signal?.throwIfAborted();
    try { return toJs(await py[name](arg)); } catch (err) {
      if (signal?.aborted) throw signal.reason;
      throw pythonError(err);
    }
  };
  return {
    pyodide,
    bootMs: performance.now() - t0,
    capabilities: async ({ refresh = false } = {}) => {
      try { return toJs(await py.capabilities(refresh)); } catch (err) { throw pythonError(err); }
    },
    embed: call('embed'),
    rerank: call('rerank'),
    generate: cancellable('generate'),
    chat: cancellable('chat'),
    transcribe: async ({ audio, ...rest } = {}) => {
      let samples;
      try { samples = await whisper.toSamples(audio); } catch (err) { throw new ForgeError(err.message, 400); }
      try { return toJs(await py.transcribe(rest, samples)); } catch (err) { throw pythonError(err); }
    },
    speak: async ({ onAudio, ...rest } = {}) => {
      // onAudio(samples, sample_rate): each sentence (page) or piece of the host's stream, as it is made
      const t0 = performance.now();
      let first = null;
      const chunk = (samples, rate) => { first ??= performance.now() - t0; onAudio?.(samples, rate); };
      let out;
      try { out = toJs(await py.speak(rest, chunk)); } catch (err) { throw pythonError(err); }
      return { ...out, first_audio_ms: first ?? out.ms, wav: piper.wav(out.audio, out.sample_rate) };
    },
    configure: (arg) => { try { return toJs(py.configure(arg)); } catch (err) { throw pythonError(err); } },
    cacheUsage: async () => toJs(await py.cache_usage()),
    clearCache: async () => toJs(await py.clear_cache()),
  };
}

/** `window.forge`: usable at once; every call waits for `forge.ready`. */
export function install(settings = {}) {
  let impl = null;
  const ready = boot(settings).then((f) => { impl = f; return f; });
  const later = (name) => async (...args) => { await ready; return impl[name](...args); };
  const forge = {
    ready,
    capabilities: later('capabilities'),
    embed: later('embed'),
    rerank: later('rerank'),
    generate: later('generate'),
    chat: later('chat'),
    transcribe: later('transcribe'),
    speak: later('speak'),
    configure: later('configure'),
    cacheUsage: later('cacheUsage'),
    clearCache: later('clearCache'),
    get bootMs() { return impl?.bootMs; },
    get pyodide() { return impl?.pyodide; },
  };
  window.forge = forge;
  return forge;
}
