// The demo page: drives window.forge (web/forge.mjs) from the controls.
import { install } from './forge.mjs';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const apiKey = params.get('key') ?? localStorage.getItem('ferrousforge.apiKey') ?? '';
if (params.get('key')) localStorage.setItem('ferrousforge.apiKey', apiKey);
const forge = install({ api_key: apiKey, preload: ['all-minilm'] });

function setStatus(text, kind = '') { $('status').textContent = text; $('status').className = `status ${kind}`; }

function showCaps(caps) {
  const rows = [
    ['Cross-origin isolated', caps.isolated ? 'yes (wasm threads)' : 'no (1 thread)'],
    ['Cores / memory', `${caps.cores} cores, ${caps.device_memory_gb} GB`],
    ...caps.accelerators.map((a) => [a.name, a.error ? a.error
      : `${a.gflops.toFixed(2)} GFLOP/s${a.software ? ' (software adapter)' : ''}${a.name === 'browser-wasm' ? `, ${a.threads} threads` : ''}`]),
    ['Ranking', caps.ranking.join(' › ') || 'host only'],
  ];
  $('caps').replaceChildren(...rows.flatMap(([k, v]) => {
    const dt = document.createElement('dt'); dt.textContent = k;
    const dd = document.createElement('dd'); dd.textContent = v;
    return [dt, dd];
  }));
}

async function refreshCache() {
  const u = await forge.cacheUsage();
  $('cache-usage').textContent = `cache: ${u.entries} files, ${(u.usage / 2 ** 20).toFixed(1)} MiB`;
}

/** An error as a user can act on it: a host that can't be reached says so. */
function explain(err) {
  if (/failed to fetch|networkerror|network error|load failed/i.test(String(err?.message ?? err))) {
    setStatus('Host unreachable', 'error');
    return 'the host can\'t be reached: is `ferrousforge serve` running?';
  }
  return err?.message ?? String(err);
}

function badge(result) {
  return `${result.placement} · ${result.ms.toFixed(0)} ms${result.fallback ? ` · fell back: ${result.fallback}` : ''}`;
}

// -- chat ---------------------------------------------------------------------------------
const history = [];

function bubble(role, text = '') {
  const div = document.createElement('div');
  div.className = `msg ${role}`;
  const body = document.createElement('span');
  body.textContent = text;
  div.append(body);
  $('messages').append(div);
  $('messages').scrollTop = $('messages').scrollHeight;
  return { div, body };
}

function chatMeta(out) {
  const meta = document.createElement('span');
  meta.className = 'meta';
  const tag = document.createElement('span');
  tag.className = `badge ${out.placement === 'host' ? 'host' : ''}`;
  tag.textContent = out.placement;
  const rate = out.eval_duration ? out.eval_count / (out.eval_duration / 1e9) : 0;
  meta.append(tag, `${out.eval_count} tokens · ${rate.toFixed(1)} tokens/s · ${(out.ms / 1000).toFixed(1)} s`
    + ` · ${out.fallback ? `fell back: ${out.fallback}` : out.reason}`);
  return meta;
}

async function send(event) {
  event.preventDefault();
  const text = $('chat-input').value.trim();
  if (!text || answering) return;  // one answer at a time: Stop ends this one
  $('chat-input').value = '';
  await ask(text);
}

const MAX_TOKENS = 256;  // a reply's length at most: the answer says when it was cut there
let answering = null;  // the AbortController of the answer being written: Stop aborts it
$('stop').addEventListener('click', () => answering?.abort());

/** The chat's answer to `text` (shown as it streams; Stop keeps what was written), or null on an error. */
async function ask(text) {
  $('send').hidden = true;
  $('stop').hidden = false;
  const controller = answering = new AbortController();
  bubble('user', text);
  history.push({ role: 'user', content: text });
  const reply = bubble('assistant', '…');
  let first = true;
  try {
    const out = await forge.chat({
      model: $('chat-model').value, messages: history, placement: $('placement').value,
      options: { num_predict: MAX_TOKENS },
      signal: controller.signal,
      onToken: (piece) => {
        const box = $('messages');
        const following = box.scrollHeight - box.scrollTop - box.clientHeight < 40;  // unless scrolled up
        reply.body.textContent = (first ? '' : reply.body.textContent) + piece;
        first = false;
        if (following) box.scrollTop = box.scrollHeight;
      },
    });
    setStatus('Ready', 'ok');
    reply.body.textContent = out.message.content + (out.done_reason === 'length' ? ' …' : '');
    const meta = chatMeta(out);
    if (out.done_reason === 'length') meta.append(` · cut at ${MAX_TOKENS} tokens`);
    reply.div.append(meta);
    $('messages').scrollTop = $('messages').scrollHeight;
    history.push(out.message);
    return out.message.content;
  } catch (err) {
    if (err.name === 'AbortError') {  // stopped: what was written stays, in the history too
      const partial = first ? '' : reply.body.textContent;
      reply.body.textContent = partial;
      const meta = document.createElement('span');
      meta.className = 'meta';
      meta.textContent = 'stopped';
      reply.div.append(meta);
      if (partial) history.push({ role: 'assistant', content: partial });
      else history.pop();  // nothing was said: the question goes too
      return partial;
    }
    if (first) reply.body.textContent = '';  // what was written before the failure stays
    const meta = document.createElement('span');
    meta.className = 'meta error';
    meta.textContent = `error: ${explain(err)}`;
    reply.div.append(meta);
    history.pop();
    return null;
  } finally {
    answering = null;
    $('send').hidden = false;
    $('stop').hidden = true;
    refreshCache();
  }
}

const PREFERRED_CHAT = ['smollm2:135m', 'gemma3:270m']; // instruction-tuned first: it answers, a base model rambles

async function listModels() {
  const headers = apiKey ? { Authorization: `Bearer ${apiKey}` } : {};
  const tags = await (await fetch('/api/tags', { headers })).json();
  const names = tags.models.filter((m) => m.details.format === 'gguf').map((m) => m.name);
  if (!names.length) return;
  const chosen = PREFERRED_CHAT.find((n) => names.includes(n)) ?? names[0];
  $('chat-model').replaceChildren(...names.map((n) => new Option(n, n, n === chosen, n === chosen)));
}

addEventListener('forge-download', ({ detail }) => {
  $('download').hidden = detail.done;
  $('download-bar').value = detail.total ? detail.loaded / detail.total : 0;
  $('download-label').textContent = `Downloading model ${(detail.loaded / 2 ** 20).toFixed(0)}`
    + ` of ${(detail.total / 2 ** 20).toFixed(0)} MiB`;
});

async function search() {
  const documents = $('docs').value.split('\n').map((s) => s.trim()).filter(Boolean);
  if (!$('query').value.trim() || !documents.length) {
    $('search-meta').textContent = !documents.length ? 'add some paragraphs to search, one a line' : 'type a query';
    return;
  }
  $('search').disabled = true;
  try {
    const out = await forge.rerank({ model: 'all-minilm', query: $('query').value, documents });
    $('results').replaceChildren(...out.results.map((r) => {
      const li = document.createElement('li');
      li.textContent = `${r.relevance_score.toFixed(3)} — ${documents[r.index]}`;
      return li;
    }));
    setStatus('Ready', 'ok');
    $('search-meta').textContent = `${badge(out)} · ${((documents.length + 1) / (out.ms / 1000)).toFixed(0)} embeddings/s`;
  } catch (err) {
    $('search-meta').textContent = `error: ${explain(err)}`;
  } finally {
    $('search').disabled = false;
    refreshCache();
  }
}

// -- speech ---------------------------------------------------------------------------------
let recorder = null;

async function record() {
  if (recorder) { recorder.stop(); return; }  // second click: stop and transcribe
  let stream;
  try { stream = await navigator.mediaDevices.getUserMedia({ audio: true }); } catch (err) {
    $('stt-meta').textContent = `no microphone: ${err.message}`;
    return;
  }
  const parts = [];
  recorder = new MediaRecorder(stream);
  recorder.ondataavailable = (e) => parts.push(e.data);
  recorder.onstop = () => {
    stream.getTracks().forEach((t) => t.stop());
    $('record').textContent = 'Record';
    $('record').classList.remove('recording');
    transcribe(new Blob(parts, { type: recorder.mimeType }));
    recorder = null;
  };
  recorder.start();
  $('record').textContent = 'Stop';
  $('record').classList.add('recording');
  $('stt-meta').textContent = 'recording…';
}

async function transcribe(audio) {
  $('transcript').textContent = '…';
  $('stt-meta').textContent = 'transcribing…';
  let out;
  try {
    out = await forge.transcribe({ model: $('stt-model').value, audio, placement: $('speech-placement').value });
  } catch (err) {
    $('transcript').textContent = '';
    $('stt-meta').textContent = `error: ${explain(err)}`;
    return;
  }
  $('transcript').textContent = out.text;
  $('stt-meta').textContent = `${badge(out)} · ${out.duration.toFixed(1)} s of audio · real-time factor ${out.rtf.toFixed(2)}`
    + ` · ${out.fallback ? '' : out.reason}`;
  refreshCache();
  if ($('ask-chat').checked && out.text.trim()) {
    const reply = await ask(out.text.trim());
    if (reply?.trim()) await speak(reply);
  }
}

/** Speak `text`: each sentence is played as soon as it is made, then the whole clip is kept to replay. */
async function speak(text) {
  $('say').disabled = true;
  $('tts-meta').textContent = 'speaking…';
  const context = new AudioContext();
  let at = 0;
  const play = (samples, rate) => {
    const buffer = context.createBuffer(1, samples.length, rate);
    buffer.copyToChannel(samples, 0);
    const source = context.createBufferSource();
    source.buffer = buffer;
    source.connect(context.destination);
    at = Math.max(at, context.currentTime);
    source.start(at);
    at += buffer.duration;
  };
  try {
    const out = await forge.speak({ model: $('tts-model').value, input: text, placement: $('speech-placement').value, onAudio: play });
    setStatus('Ready', 'ok');
    $('speech-audio').src = URL.createObjectURL(out.wav);
    $('tts-meta').textContent = `${badge(out)} · ${out.duration.toFixed(1)} s of audio · ${out.audio_per_s.toFixed(1)} s of audio/s`
      + ` · first audio after ${out.first_audio_ms.toFixed(0)} ms`;
  } catch (err) {
    $('tts-meta').textContent = `error: ${explain(err)}`;
  } finally {
    $('say').disabled = false;
    refreshCache();
  }
}

async function listSpeechModels() {
  const headers = apiKey ? { Authorization: `Bearer ${apiKey}` } : {};
  const tags = await (await fetch('/api/tags', { headers })).json();
  for (const [select, family] of [['stt-model', 'whisper'], ['tts-model', 'piper']]) {
    const names = tags.models.filter((m) => m.details.family === family)
      .sort((a, b) => a.size - b.size).map((m) => m.name);  // the smallest first: quickest in a page
    if (names.length) $(select).replaceChildren(...names.map((n) => new Option(n, n)));
  }
}

$('record').addEventListener('click', record);
$('audio-file').addEventListener('change', () => { if ($('audio-file').files[0]) transcribe($('audio-file').files[0]); });
$('drop').addEventListener('dragover', (e) => e.preventDefault());
$('drop').addEventListener('drop', (e) => {
  e.preventDefault();
  if (e.dataTransfer.files[0]) transcribe(e.dataTransfer.files[0]);
});
$('say-form').addEventListener('submit', (e) => {
  e.preventDefault();
  if ($('say-input').value.trim()) speak($('say-input').value.trim());
  else $('tts-meta').textContent = 'type something to say';
});
listSpeechModels().catch(() => {});

$('search').addEventListener('click', search);
$('query').addEventListener('keydown', (e) => { if (e.key === 'Enter') { e.preventDefault(); search(); } });
$('chat-form').addEventListener('submit', send);
listModels().catch(() => {});
$('prefer').addEventListener('change', () => forge.configure({ prefer: $('prefer').value }));
$('clear-cache').addEventListener('click', async () => { await forge.clearCache(); refreshCache(); });

forge.ready.then(async (f) => {
  setStatus(`Ready in ${(f.bootMs / 1000).toFixed(1)} s`, 'ok');
  showCaps(await forge.capabilities());
  refreshCache();
}).catch((err) => setStatus(`Could not start: ${err.message}`, 'error'));
