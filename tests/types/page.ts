// A page written against the runtime's declarations (web/forge.d.mts): `tsc -p tests/types` checks
// that what docs/browser.md shows type-checks, and that mistakes do not (@ts-expect-error).
import { ForgeError, install, type Placement } from '../../web/forge.mjs';

const forge = install({ preload: ['all-minilm'], prefer: 'browser' });

async function page(): Promise<void> {
  const booted = await forge.ready;
  const caps = await forge.capabilities({ refresh: true });
  const fastest: string | undefined = caps.ranking[0];
  const out = await forge.embed({ model: 'all-minilm', input: ['a', 'b'], placement: 'auto' });
  const where: Placement = out.placement;
  const first: number = out.embeddings[0][0];
  const ranked = await forge.rerank({ model: 'all-minilm', query: 'q', documents: ['x', { text: 'y' }], top_n: 1 });
  const best: number = ranked.results[0].relevance_score;
  const stop = new AbortController();
  const reply = await forge.chat({
    model: 'smollm2:135m',
    messages: [{ role: 'user', content: 'Hi' }],
    options: { num_predict: 32, temperature: 0 },
    onToken: (piece) => console.log(piece.length),
    signal: stop.signal,
  });
  const text: string = reply.message.content;
  const done: string = reply.done_reason;
  const completion = await forge.generate({ model: 'gemma3:270m', prompt: 'Hi', placement: 'host' });
  const said: string = completion.response;
  const heard = await forge.transcribe({ model: 'whisper:tiny.en', audio: new Blob([]) });
  const rtf: number = heard.rtf;
  const spoken = await forge.speak({ model: 'piper:joe', input: 'Hello!', onAudio: (samples, rate) => samples.length * rate });
  const wav: Blob = spoken.wav;
  const settings = await forge.configure({ prefer: 'host', budget_bytes: 1 << 30 });
  const now = booted.configure({ threads: 2 });  // booted: answered at once
  const keyed: boolean = settings.api_key && now.api_key;
  const cache = await forge.clearCache();
  const entries: number = cache.entries;
  console.log(fastest, where, first, best, text, done, said, rtf, wav, keyed, entries, window.forge.bootMs);

  // @ts-expect-error: no such placement
  await forge.embed({ model: 'all-minilm', input: 'a', placement: 'gpu' });
  // @ts-expect-error: a chat takes messages, not a prompt
  await forge.chat({ model: 'smollm2:135m', prompt: 'Hi' });
  // @ts-expect-error: configure is a promise on the installed runtime
  forge.configure({ prefer: 'host' }).prefer;
  // @ts-expect-error: preferences are browser, fastest or host
  install({ prefer: 'gpu' });
}

page().catch((err: unknown) => {
  if (err instanceof ForgeError) console.log(err.status, err.message);
});
