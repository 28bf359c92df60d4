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

export async function open(ort, files, threads) {
  const options = { executionProviders: ['wasm'], graphOptimizationLevel: 'all' };
  ort.env.wasm.numThreads = threads;
  const session = (name) => ort.InferenceSession.create(files[name], options);
  return {
    ort,
    mel: await session('whisper-mel.onnx'),
    encoder: await session('whisper-encoder.onnx'),
    decoder: await session('whisper-decoder.onnx'),
  };
}

export async function close(s) {
  for (const k of ['mel', 'encoder', 'decoder']) await s[k]?.release();
}

/** Log-mel of the whole clip, frames first: {data: Float32Array, frames, bins}. */
export async function logMel(s, samples) {
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
  const { ort } = s;
  const frames = Math.min(WINDOW, mel.frames - seek);
  const window = mel.data.subarray(seek * mel.bins, (seek + frames) * mel.bins);
  const { cross_k, cross_v } = await s.encoder.run({ mel: new ort.Tensor('float32', window, [1, frames, mel.bins]) });
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
  return { ids: out, frames };
}
