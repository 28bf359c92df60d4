// What the browser benchmarks share: the repository root, Chromium's flags here, a host on a free port
// with the given models (tests/browser/serve_host.py), and the median of a list.
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = join(dirname(fileURLToPath(import.meta.url)), '..');

export const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

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
