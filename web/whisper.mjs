// Whisper's numbers in the page: audio → 16 kHz mono samples (Web Audio decodes any container the
// browser knows), the three ONNX graphs the host wrote from the CTranslate2 weights on onnxruntime-web,
// and the greedy decoding loop. Python (ferrousforge.browser.whisper_web) orchestrates: tokens, prompt,
// windows, text. Nothing here reaches beyond this origin.
export const SAMPLE_RATE = 16000;
const WINDOW = 3000;  // mel frames in 30 s, what the encoder sees

/** Float32Array of 16 kHz mono samples from a Float32Array (taken as is), Blob, ArrayBuffer or view. */
export async function toSamples(audio) {
  if (audio instanceof Float32Array) return audio;
  const bytes = audio instanceof Blob ? await audio.arrayBuffer()
    : ArrayBuffer.isView(audio) ? audio.buffer.slice(audio.byteOffset, audio.byteOffset + audio.byteLength)
      : audio;
  if (!(bytes instanceof ArrayBuffer) || bytes.byteLength === 0) throw new Error('audio must be a non-empty file or Float32Array');
  const context = new OfflineAudioContext(1, SAMPLE_RATE, SAMPLE_RATE);
  let decoded;
  try { decoded = await context.decodeAudioData(bytes); } catch { throw new Error('audio is not a readable audio file'); }
  if (decoded.sampleRate === SAMPLE_RATE && decoded.numberOfChannels === 1) return decoded.getChannelData(0);
  const frames = Math.ceil(decoded.duration * SAMPLE_RATE);
  const mix = new OfflineAudioContext(1, frames, SAMPLE_RATE);  // resamples and mixes down
  const source = mix.createBufferSource();
  source.buffer = decoded;
  source.connect(mix.destination);
  source.start();
  return (await mix.startRendering()).getChannelData(0);
}

/** A float32 WAV of the samples (lossless: the host decodes exactly these numbers). */
export function wav(samples) {
  const out = new DataView(new ArrayBuffer(44 + samples.length * 4));
  const text = (at, s) => { for (let i = 0; i < s.length; i++) out.setUint8(at + i, s.charCodeAt(i)); };
  text(0, 'RIFF'); out.setUint32(4, 36 + samples.length * 4, true); text(8, 'WAVEfmt ');
  out.setUint32(16, 16, true); out.setUint16(20, 3, true); out.setUint16(22, 1, true);
  out.setUint32(24, SAMPLE_RATE, true); out.setUint32(28, SAMPLE_RATE * 4, true);
  out.setUint16(32, 4, true); out.setUint16(34, 32, true); text(36, 'data');
  out.setUint32(40, samples.length * 4, true);
  new Float32Array(out.buffer, 44).set(samples);
  return new Uint8Array(out.buffer);
}

/** The host's /v1/audio/transcriptions (verbose_json) for these samples: {status, body}. */
export async function postTranscription(url, headers, samples, fields) {
  const form = new FormData();
  form.append('file', new Blob([wav(samples)], { type: 'audio/wav' }), 'audio.wav');
  for (const [k, v] of Object.entries(fields)) form.append(k, String(v));
  const response = await fetch(url, { method: 'POST', headers, body: form });
  return { status: response.status, body: await response.json().catch(() => ({})) };
}

/** A WebGPU device of its own for onnxruntime-web, with the adapter's limits and features: made here, a
 *  failure is an error (onnxruntime-web waits forever on a device it asked for and didn't get), and
 *  destroying it stops the work queued on it. */
async function gpuDevice() {
  const adapter = await navigator.gpu?.requestAdapter();
  if (!adapter) throw new Error('no WebGPU adapter');
  const requiredLimits = {};
  for (const name in adapter.limits) requiredLimits[name] = adapter.limits[name];
  return adapter.requestDevice({ requiredFeatures: [...adapter.features], requiredLimits });
}

/** The three graphs' sessions on one execution provider ('wasm' or 'webgpu'). */
export async function open(ort, files, threads, ep = 'wasm') {
  const device = ep === 'webgpu' ? await gpuDevice() : null;
  const options = {
    executionProviders: [device ? { name: 'webgpu', device } : ep],
    graphOptimizationLevel: 'all',
    logSeverityLevel: 3,  // errors only (the WebGPU EP warns, as console errors, of shape ops left to the CPU)
  };
  ort.env.wasm.numThreads = threads;
  const session = (name) => ort.InferenceSession.create(files[name], options);
  return {
    ort,
    ep,
    device,
    busy: null,  // a measurement abandoned while it still runs (see `measure`)
    mel: await session('whisper-mel.onnx'),
    encoder: await session('whisper-encoder.onnx'),
    decoder: await session('whisper-decoder.onnx'),
  };
}

export async function close(s) {
  await s.busy;  // a session can't be released while it runs
  for (const k of ['mel', 'encoder', 'decoder']) await s[k]?.release();
  s.device?.destroy();
}

/** Placement's measurement: milliseconds of one encoder pass over a 30 s window (silence) and of one
 *  decoder step (the mean of `steps`), each after a first pass, or null once `limitMs` has passed.
 *  A run can't be cancelled: an abandoned one finishes in the background (`s.busy`), at once on
 *  WebGPU, whose device is destroyed. */
export async function measure(s, size, steps, limitMs) {
  const { ort } = s;
  const work = (async () => {
    const { data, bins } = await logMel(s, new Float32Array(SAMPLE_RATE * 30));
    const mel = new ort.Tensor('float32', data.subarray(0, WINDOW * bins), [1, WINDOW, bins]);
    await s.encoder.run({ mel });  // warm-up: WebGPU compiles its shaders, wasm tiers up its code
    let t = performance.now();
    const { cross_k, cross_v } = await s.encoder.run({ mel });
    const encoder = performance.now() - t;
    const [layers, , heads, dim] = cross_k.dims;
    const cache = new ort.Tensor('float32', new Float32Array(0), [layers, 1, heads, 0, dim]);
    const suppress = new ort.Tensor('float32', new Float32Array(size), [size]);
    const feeds = (token, k, v) => ({
      tokens: new ort.Tensor('int64', BigInt64Array.from([BigInt(token)]), [1, 1]), self_k: k, self_v: v,
      cross_k, cross_v, suppress,
    });
    let r = await s.decoder.run(feeds(0, cache, cache));  // warm-up
    t = performance.now();
    for (let i = 0; i < steps; i++) r = await s.decoder.run(feeds(i + 1, r.self_k_out, r.self_v_out));
    return { encoder_ms: encoder, step_ms: (performance.now() - t) / steps };
  })();
  let timer;
  const late = new Promise((resolve) => { timer = setTimeout(() => resolve(null), limitMs); });
  const out = await Promise.race([work, late]);
  clearTimeout(timer);
  if (out === null) {  // stop it: on WebGPU its pending work fails at once, and this `s` is done for
    s.device?.destroy();
    s.busy = work.catch(() => null);
  }
  return out;
}

/** Log-mel of the whole clip, frames first: {data: Float32Array, frames, bins}. */
export async function logMel(s, samples) {
  await s.busy;  // an abandoned measurement still running
  const out = await s.mel.run({ audio: new s.ort.Tensor('float32', samples, [samples.length]) });
  const [, frames, bins] = out.mel.dims;
  return { data: out.mel.data, frames, bins };
}

function mask(size, ids) {
  const m = new Float32Array(size);
  for (const i of ids) m[i] = -Infinity;
  return m;
}

/** Greedy decoding of the window of `mel` starting at frame `seek`: the token ids before end-of-text. */
export async function decodeWindow(s, mel, seek, prompt, suppress, suppressBegin, eot, limit, size) {
  const { cross, frames } = await encodeWindow(s, mel, seek);
  return { ids: await decode(s, cross, prompt, suppress, suppressBegin, eot, limit, size), frames };
}

/** The encoder on the window of `mel` starting at frame `seek`: {cross: {k, v}, frames}; k and v are
 *  {data, dims}, which any onnxruntime instance (wasm's or WebGPU's) takes back as tensors. */
export async function encodeWindow(s, mel, seek) {
  const frames = Math.min(WINDOW, mel.frames - seek);
  const window = mel.data.subarray(seek * mel.bins, (seek + frames) * mel.bins);
  const out = await s.encoder.run({ mel: new s.ort.Tensor('float32', window, [1, frames, mel.bins]) });
  const plain = (t) => ({ data: t.data, dims: t.dims });
  return { cross: { k: plain(out.cross_k), v: plain(out.cross_v) }, frames };
}

/** Greedy decoding after `prompt` against a window's encoding `cross`: the token ids before `eot`. */
export async function decode(s, cross, prompt, suppress, suppressBegin, eot, limit, size) {
  const { ort } = s;
  const cross_k = new ort.Tensor('float32', cross.k.data, cross.k.dims);
  const cross_v = new ort.Tensor('float32', cross.v.data, cross.v.dims);
  const always = new ort.Tensor('float32', mask(size, suppress), [size]);
  const first = new ort.Tensor('float32', mask(size, [...suppress, ...suppressBegin]), [size]);
  const [layers, , heads, dim] = cross_k.dims;
  let selfK = new ort.Tensor('float32', new Float32Array(0), [layers, 1, heads, 0, dim]);
  let selfV = selfK;
  let step = prompt;
  const out = [];
  while (out.length < limit) {
    const tokens = new ort.Tensor('int64', BigInt64Array.from(step, BigInt), [1, step.length]);
    const r = await s.decoder.run({
      tokens, self_k: selfK, self_v: selfV, cross_k, cross_v, suppress: out.length ? always : first,
    });
    selfK = r.self_k_out; selfV = r.self_v_out;
    const token = Number(r.next_token.data[0]);
    if (token === eot) break;
    out.push(token);
    step = [token];
  }
  return out;
}
