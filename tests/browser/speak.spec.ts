// I: speech synthesis in the page. Piper's voice runs on onnxruntime-web with espeak-ng (compiled to
// JavaScript) for phonemes; the host's Whisper transcribes the page's audio back to the words.
import { expect, test, type Page } from '@playwright/test';
import { expectSameOrigin, openForge, watch, why } from './helpers';

const SENTENCES = 'My sister planted seven tomato plants in the garden. They grew tall during the summer.';

const words = (s: string) => s.toLowerCase().replace(/[^a-z' ]/g, ' ').split(/\s+/).filter(Boolean);

/** Word error rate: word-level edit distance over the reference's length. */
export function wer(reference: string, hypothesis: string) {
  const r = words(reference), h = words(hypothesis);
  let row = Array.from({ length: h.length + 1 }, (_, j) => j);
  for (let i = 1; i <= r.length; i++) {
    const next = [i];
    for (let j = 1; j <= h.length; j++) {
      next[j] = Math.min(row[j] + 1, next[j - 1] + 1, row[j - 1] + (r[i - 1] === h[j - 1] ? 0 : 1));
    }
    row = next;
  }
  return row[h.length] / r.length;
}

/** Speak in the page; the answer without its samples, plus what the host's Whisper (base) hears in its WAV. */
async function speakAndHear(page: Page, request: object) {
  return page.evaluate(async (req) => {
    const forge = (window as any).forge;
    const chunks: number[] = [];
    const out = await forge.speak({ ...req, onAudio: (samples: Float32Array) => chunks.push(samples.length) });
    const form = new FormData();
    form.append('file', out.wav, 'speech.wav');
    form.append('model', 'whisper:base');  // tiny.en now and then mishears piper's (randomly varied) voice
    const heard = await (await fetch('/v1/audio/transcriptions', { method: 'POST', body: form })).json();
    const { audio, wav, ...rest } = out;
    return {
      ...rest, samples: audio.length, wavBytes: wav.size, wavType: wav.type, chunks, heard: heard.text,
      peak: audio.reduce((m: number, x: number) => Math.max(m, Math.abs(x)), 0),
    };
  }, request);
}

test('speaks in the browser, and the host hears the words; falls back to the host when asked', async ({ page }) => {
  const w = watch(page);
  await openForge(page);
  const local = await speakAndHear(page, { model: 'piper:joe', input: SENTENCES, placement: 'browser' });
  expect(local.placement, why(local)).toBe('browser-wasm');
  expect(local.sample_rate).toBe(22050);
  expect(local.voice).toBe('joe');
  expect(local.sentences).toBe(2);
  expect(local.chunks.length).toBe(2);  // one piece of audio per sentence, as it was made
  expect(local.chunks.reduce((a: number, b: number) => a + b, 0)).toBe(local.samples);
  expect(local.duration).toBeCloseTo(local.samples / 22050, 5);
  expect(local.duration).toBeGreaterThan(3);
  expect(local.peak).toBeCloseTo(1, 2);  // each sentence scaled to full range, as piper does
  expect(local.wavBytes).toBe(44 + 2 * local.samples);
  expect(local.wavType).toBe('audio/wav');
  expect(local.first_audio_ms).toBeGreaterThan(0);
  expect(local.first_audio_ms).toBeLessThan(local.ms);
  expect(wer(SENTENCES, local.heard), local.heard).toBeLessThanOrEqual(0.1);

  const host = await speakAndHear(page, { model: 'piper:joe', input: SENTENCES, placement: 'host', voice: 'alloy' });
  expect(host.placement, why(host)).toBe('host');
  expect(host.sample_rate).toBe(24000);  // the host's "pcm", read as it streamed
  expect(host.duration).toBeGreaterThan(3);
  expect(host.chunks.length).toBeGreaterThan(0);
  expect(wer(SENTENCES, host.heard), host.heard).toBeLessThanOrEqual(0.1);

  const slow = await speakAndHear(page, { model: 'piper:joe', input: 'Slowly now.', speed: 0.5, placement: 'browser' });
  const quick = await speakAndHear(page, { model: 'piper:joe', input: 'Slowly now.', speed: 2, placement: 'browser' });
  expect(slow.duration).toBeGreaterThan(2.5 * quick.duration);
  const again = await speakAndHear(page, { model: 'piper:joe', input: SENTENCES });  // auto, loaded
  console.log(`piper:joe ${local.duration.toFixed(2)} s of audio: browser-wasm ${local.audio_per_s.toFixed(1)} s/s `
    + `(first audio ${local.first_audio_ms.toFixed(0)} ms, with the load); auto → ${again.placement} `
    + `${again.audio_per_s.toFixed(1)} s/s (first audio ${again.first_audio_ms.toFixed(0)} ms, ${again.reason}); host ${host.audio_per_s.toFixed(1)} s/s `
    + `(first audio ${host.first_audio_ms.toFixed(0)} ms); heard: "${local.heard}"`);

  const errors = await page.evaluate(async () => {
    const forge = (window as any).forge;
    const fail = (req: object) => forge.speak(req).then(() => null, (e: any) => ({ message: e.message, status: e.status }));
    return {
      empty: await fail({ model: 'piper:joe', input: '  ' }),
      speed: await fail({ model: 'piper:joe', input: 'Hi.', speed: 9 }),
      voice: await fail({ model: 'piper:joe', input: 'Hi.', voice: 'nobody', placement: 'browser' }),
      hostVoice: await fail({ model: 'piper:joe', input: 'Hi.', voice: 'nobody', placement: 'host' }),
      long: await fail({ model: 'piper:joe', input: 'a'.repeat(4097), placement: 'browser' }),
      dots: await fail({ model: 'piper:joe', input: '...', placement: 'browser' }),
      unknown: await fail({ model: 'piper:nobody', input: 'Hi.' }),
      hostAlloy: await forge.speak({ model: 'piper:joe', input: 'Hi.', voice: 'alloy', placement: 'host' })
        .then((r: any) => r.voice),
    };
  });
  expect(errors.long).toEqual({ message: "'input' is 4097 characters, more than the limit of 4096", status: 400 });
  expect(errors.dots?.status).toBe(400);
  expect(errors.dots?.message).toContain('no words to speak');
  expect(errors.unknown).toEqual({ message: "model 'piper:nobody' not found, try pulling it first", status: 404 });
  expect(errors.hostAlloy).toBe('joe');  // the voice that spoke, wherever it ran
  expect(errors.empty).toEqual({ message: "'input' must be a non-empty string: there is nothing to say", status: 400 });
  expect(errors.speed).toEqual({ message: "'speed' must be between 0.25 and 4.0", status: 400 });
  expect(errors.voice?.status).toBe(400);
  expect(errors.voice?.message).toContain("unknown voice 'nobody'");
  expect(errors.hostVoice?.status).toBe(400);
  expectSameOrigin(w.requests);
  expect(w.errors.filter((e) => !/status of (400|404)/.test(e))).toEqual([]);  // the host's answers to bad requests
});
