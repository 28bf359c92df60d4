// Starts the hosts the browser tests talk to (tests/browser/serve_host.py, free ports) and stops them after.
import { spawn, type ChildProcess } from 'node:child_process';
import * as path from 'node:path';

const root = path.resolve(__dirname, '..', '..');

function startHost(args: string[]): Promise<{ url: string; proc: ChildProcess }> {
  const python = process.env.FORGE_PYTHON ?? path.join(root, '.venv', 'bin', 'python');
  const proc = spawn(python, [path.join(root, 'tests', 'browser', 'serve_host.py'), ...args], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`host did not start: ${out}`)), 300_000);
    proc.stdout!.on('data', (chunk) => {
      out += String(chunk);
      const m = /FORGE_URL=(\S+)/.exec(out);
      if (m) { clearTimeout(timer); resolve({ url: m[1], proc }); }
    });
    proc.on('exit', (code) => { clearTimeout(timer); reject(new Error(`host exited (${code}): ${out}`)); });
  });
}

export default async function globalSetup() {
  const open = await startHost([]);
  const keyed = await startHost(['--api-keys', 'test-key-1']);
  process.env.FORGE_URL = open.url;
  process.env.FORGE_KEYED_URL = keyed.url;
  return async () => {
    for (const h of [open, keyed]) h.proc.kill('SIGTERM');
  };
}
