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

function badge(result) {
  return `${result.placement} · ${result.ms.toFixed(0)} ms${result.fallback ? ` · fell back: ${result.fallback}` : ''}`;
}

async function search() {
  const documents = $('docs').value.split('\n').map((s) => s.trim()).filter(Boolean);
  $('search').disabled = true;
  try {
    const out = await forge.rerank({ model: 'all-minilm', query: $('query').value, documents });
    $('results').replaceChildren(...out.results.map((r) => {
      const li = document.createElement('li');
      li.textContent = `${r.relevance_score.toFixed(3)} — ${documents[r.index]}`;
      return li;
    }));
    $('search-meta').textContent = `${badge(out)} · ${((documents.length + 1) / (out.ms / 1000)).toFixed(0)} embeddings/s`;
  } catch (err) {
    $('search-meta').textContent = `error: ${err.message}`;
  } finally {
    $('search').disabled = false;
    refreshCache();
  }
}

$('search').addEventListener('click', search);
$('prefer').addEventListener('change', () => forge.configure({ prefer: $('prefer').value }));
$('clear-cache').addEventListener('click', async () => { await forge.clearCache(); refreshCache(); });

forge.ready.then(async (f) => {
  setStatus(`Ready in ${(f.bootMs / 1000).toFixed(1)} s`, 'ok');
  showCaps(await forge.capabilities());
  refreshCache();
}).catch((err) => setStatus(`Could not start: ${err.message}`, 'error'));
