// H2 here (node bench/browser_gpu_kernels.mjs [--model smollm2:135m] [--steps 4] [--prompt 16]): where a
// decode step's time goes on the page's WebGPU (SwiftShader with --enable-unsafe-webgpu, a CPU adapter):
// the decoder (ferrousforge.gpu) built in Pyodide from the host's GGUF blob, a few greedy steps timed
// with their readback, then each kernel's dispatches of a step replayed alone and the whole step (as
// bench/gpu_decode.py does natively), and one prompt pass. Correctness-speed only: not a target.
import { launch, openForge, startHost } from './browser_host.mjs';

const arg = (name, fallback) => (process.argv.includes(name) ? process.argv[process.argv.indexOf(name) + 1] : fallback);
const MODEL = arg('--model', 'smollm2:135m');
const STEPS = Number(arg('--steps', 4));
const PROMPT = Number(arg('--prompt', 16));

const PYTHON = `
import time
from collections import Counter

import js
from ferrousforge.gguf import parse_tensors
from ferrousforge.gpu import tune
from ferrousforge.gpu.decoder import Decoder
from ferrousforge.gpu.webgpu import WebGpuDevice

gpu = await WebGpuDevice.open()
data = memoryview((await (await js.fetch(URL)).arrayBuffer()).to_bytes())
meta, tensors = parse_tensors(data, len(data))
lines = []
t0 = time.perf_counter()
decoder = Decoder(gpu, data, meta, tensors, n_ctx=max(STEPS, PROMPT) + 8, slots=1)
token, position = 1, 0

async def step():
    global token, position
    run = decoder.submit([(token, position, 0)])
    token = (await decoder.read_best(run, 1))[0]
    position += 1
    return run

run = await step()  # compiles the step's kernels and records its pass
lines.append(f"load, first step: {time.perf_counter() - t0:.1f} s")
times = []
for _ in range(STEPS):
    t = time.perf_counter()
    run = await step()
    times.append(time.perf_counter() - t)
times.sort()
dispatches = run.recording.dispatches
lines.append(f"decode step (median of {STEPS}): {times[len(times) // 2] * 1e3:.0f} ms, {len(dispatches)} dispatches")

async def gpu_time(ds):  # one untimed submit (it encodes the list), then one timed
    return await tune.seconds(gpu, ds, repeats=1, runs=1)

whole = await gpu_time(dispatches)
lines.append(f"the step replayed without its readback: {whole * 1e3:.0f} ms; by kernel alone:")
for kind, count in Counter(d.kernel.name for d in dispatches).most_common():
    alone = await gpu_time([d for d in dispatches if d.kernel.name == kind])
    lines.append(f"  {kind}: {count} dispatches, {alone * 1e3:.0f} ms ({alone / whole:.0%}), {alone * 1e3 / count:.1f} ms each")
if PROMPT:
    rows = [(1 + i % 100, i, 0) for i in range(PROMPT)]
    await decoder.read_best(decoder.submit(rows, "last"), 1)
    t = time.perf_counter()
    await decoder.read_best(decoder.submit(rows, "last"), 1)
    lines.append(f"prompt pass of {PROMPT} tokens: {time.perf_counter() - t:.1f} s")
"\\n".join(lines)
`;

const { url, proc } = await startHost(MODEL);
const browser = await launch(['--enable-unsafe-webgpu']);
try {
  const page = await openForge(browser, url);
  const info = await (await fetch(`${url}/api/browser/model`, { method: 'POST', body: JSON.stringify({ model: MODEL }) })).json();
  const code = `URL = ${JSON.stringify(info.files.model.url)}\nSTEPS = ${STEPS}\nPROMPT = ${PROMPT}\n${PYTHON}`;
  const report = await page.evaluate((c) => window.forge.pyodide.runPythonAsync(c), code);
  console.log(`${MODEL} on the page's WebGPU (SwiftShader):\n${report}`);
} finally {
  await browser.close();
  proc.kill('SIGTERM');
}
