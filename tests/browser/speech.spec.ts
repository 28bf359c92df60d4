// I: speech in the page. Whisper runs on onnxruntime-web from the ONNX graphs the host wrote when the
// model was pulled; its transcript equals the host's for the same audio (greedy, same model).
import { expect, test } from '@playwright/test';
import { expectSameOrigin, forgeUrl, openForge, watch, why } from './helpers';

const SENTENCE = 'A large brown dog was sleeping under the old wooden table.';

test('transcribes a spoken sentence in the browser, as the host does', async ({ page, request }) => {
  const w = watch(page);
  const speech = await request.post(`${forgeUrl()}/v1/audio/speech`, {
    data: { model: 'piper:joe', input: SENTENCE, response_format: 'wav' },
  });
  expect(speech.ok()).toBe(true);
  const wav = [...(await speech.body())];
  const direct = await request.post(`${forgeUrl()}/v1/audio/transcriptions`, {
    multipart: { model: 'whisper:tiny.en', file: { name: 'a.wav', mimeType: 'audio/wav', buffer: Buffer.from(wav) } },
  });
  const hostText = (await direct.json()).text;
  await openForge(page);
  const run = (placement: string) => page.evaluate(([bytes, p]) => (window as any).forge.transcribe({
    model: 'whisper:tiny.en', audio: new Uint8Array(bytes as number[]), placement: p,
  }), [wav, placement] as const);
  const local = await run('browser');
  const host = await run('host');
  expect(local.placement, why(local)).toBe('browser-wasm');
  expect(host.placement, why(host)).toBe('host');
  expect(local.text).toBe(host.text);  // the same samples, greedy, no VAD on both sides
  expect(local.text).toBe(hostText);  // and the host's own answer for the file
  expect([local.language, host.language]).toEqual(['english', 'english']);  // named as OpenAI's answers name it
  expect(local.text.replace(/[^a-z ]/gi, '').toLowerCase()).toBe(SENTENCE.replace(/[^a-z ]/gi, '').toLowerCase());
  expect(local.duration).toBeGreaterThan(2);
  expect(local.rtf).toBeGreaterThan(0);
  const again = await run('auto');  // loaded: placed in the page without a reload
  expect(again.placement, why(again)).toBe('browser-wasm');
  expect(again.text).toBe(local.text);
  console.log(`whisper:tiny.en ${local.duration.toFixed(2)} s: browser-wasm RTF ${again.rtf.toFixed(3)} loaded `
    + `(${local.rtf.toFixed(3)} with the load), host RTF ${host.rtf.toFixed(3)}`);
  const bad = await page.evaluate(() => (window as any).forge.transcribe({ model: 'whisper:tiny.en', audio: new Uint8Array([1, 2, 3]) })
    .then(() => null, (e: any) => ({ message: e.message, status: e.status })));
  expect(bad).toEqual({ message: 'audio is not a readable audio file', status: 400 });
  const refused = await page.evaluate(async (bytes) => {  // what the host refuses, the page refuses too
    const ask = (extra: object) => (window as any).forge.transcribe({
      model: 'whisper:tiny.en', audio: new Uint8Array(bytes), placement: 'browser', ...extra })
      .then(() => 'ok', (e: any) => `${e.status}: ${e.message}`);
    return [await ask({ language: 'fr' }), await ask({ task: 'translate' }), await ask({ language: 'English' }),
      await ask({ model: 'whisper:nothing' })];
  }, wav);
  expect(refused[2]).toBe('ok');  // a language by its name, as the host takes it
  expect(refused[3]).toContain("404: model 'whisper:nothing' not found");
  expect(refused[0]).toContain("400: model 'whisper:tiny.en' does not know language 'fr'");
  expect(refused[1]).toContain('400: model');
  expect(refused[1]).toContain('English-only');
  expectSameOrigin(w.requests);
  expect(w.errors.filter((e) => !e.includes('status of 404'))).toEqual([]);  // the host's answer for 'whisper:nothing'
});
