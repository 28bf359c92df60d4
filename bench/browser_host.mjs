// What the browser benchmarks share: the repository root, Chromium here with its flags, a host on a free
// port with the given models (tests/browser/serve_host.py), a page with the runtime ready, and the
// median of a list.
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const root = join(dirname(fileURLToPath(import.meta.url)), '..');

export const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

/** Debian's Chromium with CHROMIUM_ARGS and any `extra` flags. */
export const launch = (extra = []) =>
  chromium.launch({ executablePath: '/usr/bin/chromium', args: [...CHROMIUM_ARGS, ...extra] });

/** A new page on the host's bench page with FerrousForge's runtime installed and ready (window.forge). */
export async function openForge(browser, url) {
  const page = await browser.newPage();
  await page.goto(`${url}/ui/bench.html`);
  await page.evaluate(async () => { const { install } = await window.loadForge(); await install({}).ready; });
  return page;
}

/** `tests/browser/serve_host.py --models <models>`: resolves to { url, proc } once it listens. */
export function startHost(models) {
  const proc = spawn(join(root, '.venv/bin/python'), [join(root, 'tests/browser/serve_host.py'),
    '--models', models], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve) => {
    let out = '';
    proc.stdout.on('data', (c) => { out += c; const m = /FORGE_URL=(\S+)/.exec(out); if (m) resolve({ url: m[1], proc }); });
  });
}

export const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
