// Shared steps of the browser tests: open the demo page, wait for the runtime, watch the network.
import { expect, type Page } from '@playwright/test';

export const forgeUrl = () => process.env.FORGE_URL!;

export interface Watch { requests: string[]; errors: string[] }

/** Record every request the page makes and every console error / uncaught exception. */
export function watch(page: Page): Watch {
  const w: Watch = { requests: [], errors: [] };
  page.on('request', (r) => w.requests.push(r.url()));
  page.on('console', (m) => { if (m.type() === 'error') w.errors.push(m.text()); });
  page.on('pageerror', (e) => w.errors.push(e.message));
  return w;
}

export async function openForge(page: Page, base = forgeUrl(), query = '') {
  await page.goto(`${base}/ui/${query}`);
  await page.evaluate(() => (window as any).forge.ready.then(() => true));
}

export function cosine(a: number[], b: number[]) {
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) { dot += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }
  return dot / Math.sqrt(na * nb);
}

export async function embed(page: Page, req: object): Promise<any> {
  return page.evaluate((r) => (window as any).forge.embed(r), req);
}

/** forge.generate with every streamed piece collected (``pieces``). */
export async function generate(page: Page, req: object): Promise<any> {
  return page.evaluate(async (r) => {
    const pieces: string[] = [];
    const out = await (window as any).forge.generate({ ...r, onToken: (t: string) => pieces.push(t) });
    return { ...out, pieces };
  }, req);
}

export const greedy = (n: number) => ({ num_predict: n, temperature: 0 });

/** A generation aborted (AbortController) once `after` pieces have streamed: how it ended, how many
 *  pieces came in all, and then a short generation at the same placement (the engine still works). */
export async function abortAfter(page: Page, req: object, after: number): Promise<any> {
  return page.evaluate(async ({ r, after }) => {
    const forge = (window as any).forge;
    const controller = new AbortController();
    let pieces = 0, error = '';
    try {
      await forge.generate({ ...r, signal: controller.signal,
        onToken: () => { if (++pieces === after) controller.abort(); } });
    } catch (e: any) { error = e.name; }
    const already = await forge.generate({ ...r, signal: AbortSignal.abort() }).then(() => '', (e: any) => e.name);
    const next = await forge.generate({ ...r, options: { num_predict: 4, temperature: 0 } });
    return { error, pieces, already, next };
  }, { r: req, after });
}

export function expectSameOrigin(requests: string[], base = forgeUrl()) {
  const off = requests.filter((u) => !u.startsWith(base) && !u.startsWith('data:') && !u.startsWith('blob:'));
  expect(off).toEqual([]);
}

/** A result's placement story, for assertion messages. */
export const why = (r: any) => JSON.stringify({ placement: r?.placement, reason: r?.reason, fallback: r?.fallback });
