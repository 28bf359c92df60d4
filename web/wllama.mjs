// llama.cpp in WebAssembly (@wllama/wllama), as the Python GGUF engine (ferrousforge.browser.gguf_web)
// uses it: load from verified bytes, and one streamed completion whose tokens go straight to the page's
// onToken (Python is not in the per-token path). Every file comes from this origin.

// Admits only whole UTF-8 characters: llama.cpp's grammar sampler then never picks a token that leaves
// invalid UTF-8, which wllama's JSON encoding would throw on (killing the request).
export const UTF8_GRAMMAR = 'root ::= [\\x01-\\U0010FFFF]*';

let module = null;
const quiet = { debug() {}, log() {}, info() {}, warn: (...a) => console.warn(...a), error: (...a) => console.error(...a) };

export async function loadWllama(runtimeURL) {
  module ??= await import(`${runtimeURL}@wllama/wllama/esm/index.js`);
  return module;
}

/** A Wllama instance with `bytes` (a GGUF, already verified) loaded; CPU only, threads explicit. */
export async function open(runtimeURL, bytes, params) {
  const { Wllama } = await loadWllama(runtimeURL);
  const w = new Wllama({ default: `${runtimeURL}@wllama/wllama/esm/wasm/wllama.wasm` },
    { suppressNativeLog: true, logger: quiet });
  w.setCompat(null);  // never the CDN "compat" build
  await w.loadModel([new Blob([bytes])], {
    n_gpu_layers: 0,  // its WebGPU path needs shader-f16 and silently falls back to CPU otherwise
    n_parallel: 1,
    ...params,
  });
  return w;
}

/** One streamed completion: text pieces to onToken as they come; the whole text, the finish reason,
 *  timings and usage at the end. An aborted `signal` stops it (wllama cancels the request). */
export async function complete(w, params, onToken, signal) {
  let text = '', finish = null, timings = null, usage = null;
  await w.createCompletion({
    ...params,
    abortSignal: signal ?? undefined,
    grammar: UTF8_GRAMMAR,
    stream: true,
    onData: (chunk) => {
      const choice = chunk.choices[0];
      if (choice.text) { text += choice.text; if (onToken) onToken(choice.text); }
      if (choice.finish_reason) finish = choice.finish_reason;
      if (chunk.timings) timings = chunk.timings;
      if (chunk.usage) usage = chunk.usage;
    },
  });
  return { text, finish, timings, usage, threads: w.getNumThreads() };
}
