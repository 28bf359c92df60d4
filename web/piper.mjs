// Piper's numbers in the page: espeak-ng (compiled to JavaScript by the `phonemizer` package, served
// from /ui/runtime/) for each clause's phonemes, the voice's VITS graph on onnxruntime-web, and the
// host's /v1/audio/speech read as it streams. Python (ferrousforge.browser.piper_web) turns phonemes
// into ids and walks the sentences. Nothing here reaches beyond this origin.
let espeak = null;

// espeak-ng ends a clause at . , ! ? ; : followed by a space or the end (not "3.50"); closing quotes
// and brackets after the mark belong to the clause; an ellipsis ends a clause with no terminator
const CLAUSE_END = /([.,!?;:])[.,!?;:"')\]]*(?=\s|$)/g;

/** espeak-ng's clauses of `text`: [phonemes (IPA), terminator ('' at the end), ends a sentence]. */
export async function clauses(runtimeURL, text, voice) {
  espeak ??= import(`${runtimeURL}phonemizer/dist/phonemizer.js`);
  const { phonemize } = await espeak;
  const parts = [];
  let start = 0;
  for (const m of text.matchAll(CLAUSE_END)) {
    parts.push([text.slice(start, m.index), m[0].startsWith('..') ? '…' : m[1]]);
    start = m.index + m[0].length;
  }
  parts.push([text.slice(start), '']);
  const out = [];
  for (const [part, terminator] of parts) {
    if (!/[\p{L}\p{N}]/u.test(part)) continue;  // nothing to say
    const lines = await phonemize(part, voice);  // one line per clause espeak-ng found (normally one)
    if (terminator === '…') out.push([lines.join(' '), '', false]);
    else out.push([lines.join(' '), terminator, terminator === '' || '.!?'.includes(terminator)]);
  }
  return out;
}

export async function open(ort, model, threads) {
  ort.env.wasm.numThreads = threads;
  return { ort, session: await ort.InferenceSession.create(model, { executionProviders: ['wasm'], graphOptimizationLevel: 'all' }) };
}

export async function close(s) { await s.session.release(); }

/** One sentence's audio: the voice's samples scaled to full range and clipped (piper's defaults). */
export async function synthesize(s, ids, scales, speaker) {
  const { ort, session } = s;
  const feeds = {
    input: new ort.Tensor('int64', BigInt64Array.from(ids, BigInt), [1, ids.length]),
    input_lengths: new ort.Tensor('int64', BigInt64Array.of(BigInt(ids.length)), [1]),
    scales: new ort.Tensor('float32', Float32Array.from(scales), [3]),
  };
  if (speaker !== null && speaker !== undefined) feeds.sid = new ort.Tensor('int64', BigInt64Array.of(BigInt(speaker)), [1]);
  const out = await session.run(feeds);
  const audio = Float32Array.from(out[session.outputNames[0]].data);
  let peak = 0;
  for (const x of audio) peak = Math.max(peak, Math.abs(x));
  for (let i = 0; i < audio.length; i++) audio[i] = peak < 1e-8 ? 0 : Math.max(-1, Math.min(1, audio[i] / peak));
  return audio;
}

export function join(parts) {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

/** A 16-bit PCM WAV of the samples, as the host's response_format "wav" (what players expect). */
export function wav(samples, rate) {
  const out = new DataView(new ArrayBuffer(44 + samples.length * 2));
  const text = (at, s) => { for (let i = 0; i < s.length; i++) out.setUint8(at + i, s.charCodeAt(i)); };
  text(0, 'RIFF'); out.setUint32(4, 36 + samples.length * 2, true); text(8, 'WAVEfmt ');
  out.setUint32(16, 16, true); out.setUint16(20, 1, true); out.setUint16(22, 1, true);
  out.setUint32(24, rate, true); out.setUint32(28, rate * 2, true);
  out.setUint16(32, 2, true); out.setUint16(34, 16, true); text(36, 'data');
  out.setUint32(40, samples.length * 2, true);
  for (let i = 0; i < samples.length; i++) out.setInt16(44 + 2 * i, Math.round(Math.max(-1, Math.min(1, samples[i])) * 32767), true);
  return new Blob([out.buffer], { type: 'audio/wav' });
}

const HOST_RATE = 24000;  // the host's response_format "pcm": 16-bit mono at 24 kHz, as OpenAI's

/** The host's /v1/audio/speech as raw PCM, read as it streams: each piece to onChunk(samples, rate).
 *  {status, audio, sample_rate} or {status, error}. */
export async function fetchSpeech(url, headers, body, onChunk) {
  const response = await fetch(url, {
    method: 'POST', headers: { 'Content-Type': 'application/json', ...headers },
    body: JSON.stringify({ ...body, response_format: 'pcm' }),
  });
  if (!response.ok) {
    const data = await response.json().catch(() => ({}));
    const error = data.error?.message ?? data.error ?? `HTTP ${response.status}`;
    return { status: response.status, error: String(error) };
  }
  const parts = [];
  let carry = new Uint8Array(0);
  for (const reader = response.body.getReader(); ;) {
    const { value, done } = await reader.read();
    if (done) break;
    const bytes = new Uint8Array(carry.length + value.length);
    bytes.set(carry); bytes.set(value, carry.length);
    const whole = bytes.length & ~1;  // a sample may be split between two network reads
    carry = bytes.slice(whole);
    const view = new DataView(bytes.buffer, 0, whole);
    const samples = new Float32Array(whole / 2);
    for (let i = 0; i < samples.length; i++) samples[i] = view.getInt16(2 * i, true) / 32768;
    if (!samples.length) continue;
    parts.push(samples);
    onChunk?.(samples, HOST_RATE);
  }
  return { status: response.status, audio: join(parts), sample_rate: HOST_RATE };
}
