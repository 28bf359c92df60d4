// I: the demo page's Speech panel with Chromium's fake microphone (project "chromium-microphone" in
// playwright.config.ts), which plays build/fake-microphone.wav once: the host's Piper speaks a sentence
// into that file, the page records it with MediaRecorder and transcribes it, speaks typed text, and a
// spoken question goes to the chat and its reply is spoken back.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { expect, test } from '@playwright/test';
import { expectSameOrigin, forgeUrl, watch } from './helpers';

const FAKE_MIC = path.resolve(__dirname, '..', '..', 'build', 'fake-microphone.wav');
const QUESTION = 'What is the capital of France?';

/** A 16-bit mono WAV of the host's 24 kHz PCM, with silence before and after. */
function wavFile(pcm: Buffer, rate = 24000) {
  const silence = (s: number) => Buffer.alloc(Math.round(s * rate) * 2);
  const data = Buffer.concat([silence(0.3), pcm, silence(0.7)]);
  const head = Buffer.alloc(44);
  head.write('RIFF', 0); head.writeUInt32LE(36 + data.length, 4); head.write('WAVEfmt ', 8);
  head.writeUInt32LE(16, 16); head.writeUInt16LE(1, 20); head.writeUInt16LE(1, 22);
  head.writeUInt32LE(rate, 24); head.writeUInt32LE(rate * 2, 28); head.writeUInt16LE(2, 32);
  head.writeUInt16LE(16, 34); head.write('data', 36); head.writeUInt32LE(data.length, 40);
  return { bytes: Buffer.concat([head, data]), seconds: data.length / 2 / rate };
}

test('records from the microphone, transcribes, speaks, and answers a spoken question aloud', async ({ page, request }) => {
  const speech = await request.post(`${forgeUrl()}/v1/audio/speech`, {
    data: { model: 'piper:joe', input: QUESTION, response_format: 'pcm' },
  });
  expect(speech.ok()).toBe(true);
  const wav = wavFile(await speech.body());
  fs.mkdirSync(path.dirname(FAKE_MIC), { recursive: true });
  fs.writeFileSync(FAKE_MIC, wav.bytes);  // read when the page opens the microphone

  const w = watch(page);
  await page.goto(`${forgeUrl()}/ui/`);
  await page.evaluate(() => (window as any).forge.ready.then(() => true));
  await expect(page.locator('#stt-model')).toHaveValue('whisper:tiny.en');
  await page.selectOption('#chat-model', 'gemma3:270m');
  await page.selectOption('#placement', 'host');  // the chat on the host: quick on two cores
  await page.selectOption('#speech-placement', 'browser');
  await page.check('#ask-chat');

  await page.click('#record');
  await expect(page.locator('#record')).toHaveText('Stop');
  await page.waitForTimeout(wav.seconds * 1000 + 500);
  await page.click('#record');
  const transcript = page.locator('#transcript');
  await expect(transcript).toContainText(/capital of France/i, { timeout: 60_000 });
  await expect(page.locator('#stt-meta')).toContainText(/browser-wasm .* real-time factor \d/);

  // the question went to the chat; its reply was spoken (in the page, with Piper)
  await expect(page.locator('.msg.user').last()).toContainText(/capital of France/i);
  await expect(page.locator('.msg.assistant .meta').last()).toContainText('host', { timeout: 60_000 });
  await expect(page.locator('#tts-meta')).toContainText(/browser-wasm .* s of audio\/s · first audio after \d+ ms/, { timeout: 90_000 });
  const reply = await page.locator('.msg.assistant > span').first().textContent();
  expect(reply?.trim().length).toBeGreaterThan(0);
  await expect(page.locator('#speech-audio')).toHaveAttribute('src', /^blob:/);

  // typed text is spoken in the page and can be played again
  await page.fill('#say-input', 'Good morning.');
  await page.click('#say');
  await expect(page.locator('#tts-meta')).toContainText(/^browser-wasm/, { timeout: 30_000 });
  const seconds = await page.evaluate(() => new Promise<number>((resolve) => {
    const audio = document.getElementById('speech-audio') as HTMLAudioElement;
    if (audio.readyState >= 1) resolve(audio.duration); else audio.onloadedmetadata = () => resolve(audio.duration);
  }));
  expect(seconds).toBeGreaterThan(0.3);
  expect(seconds).toBeLessThan(3);
  await page.screenshot({ path: 'test-results/speech-panel.png', fullPage: true });
  expectSameOrigin(w.requests);
  expect(w.errors).toEqual([]);
});
