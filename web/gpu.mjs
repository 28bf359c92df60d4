// The page's half of the GPU compute layer's WebGPU backend (ferrousforge/gpu/webgpu.py): Python
// records kernels, buffers and workgroup counts; these helpers make the WebGPU objects and encode a
// whole recorded dispatch list in one call, so replaying a forward pass costs one FFI crossing.

const KINDS = { uniform: 'uniform', read: 'read-only-storage', read_write: 'storage' };
let opened = null;

/** One device for the page (the probe and every model share it); errors and loss are remembered. */
export function open() {
  opened ??= (async () => {
    if (!navigator.gpu) throw new Error('WebGPU is not available');
    const adapter = await navigator.gpu.requestAdapter({ powerPreference: 'high-performance' });
    if (!adapter) throw new Error('no WebGPU adapter');
    const features = [...adapter.features].filter((f) => f === 'shader-f16');
    const { maxStorageBufferBindingSize, maxBufferSize } = adapter.limits;
    const device = await adapter.requestDevice({
      requiredFeatures: features, requiredLimits: { maxStorageBufferBindingSize, maxBufferSize },
    });
    const state = { device, adapter, error: null };
    device.addEventListener('uncapturederror', (e) => { state.error ??= e.error?.message ?? String(e.error); });
    device.lost.then((info) => { state.error ??= `device lost: ${info.message || info.reason}`; opened = null; });
    const info = adapter.info ?? {};
    state.name = [info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(' ');
    state.software = Boolean(info.isFallbackAdapter) || /swiftshader|llvmpipe|lavapipe|software/i.test(state.name);
    return state;
  })();
  opened.catch(() => { opened = null; });
  return opened;
}

export function limits(state) {
  const out = {};
  for (const key in state.device.limits) out[key] = state.device.limits[key];
  return out;
}

export function buffer(state, size) {
  const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
  return state.device.createBuffer({ size, usage });
}

export function write(state, target, offset, data) {
  state.device.queue.writeBuffer(target, offset, data);
}

export function kernel(state, name, code, kinds) {
  const { device } = state;
  const layout = device.createBindGroupLayout({
    entries: kinds.map(([binding, kind]) => ({ binding, visibility: GPUShaderStage.COMPUTE, buffer: { type: KINDS[kind] } })),
  });
  const module = device.createShaderModule({ code, label: name });
  const pipeline = device.createComputePipeline({
    label: name, layout: device.createPipelineLayout({ bindGroupLayouts: [layout] }), compute: { module, entryPoint: 'main' },
  });
  return { pipeline, layout, kinds };
}

/** A recorded dispatch: its parameters in a uniform buffer, its bind group, its grid. */
export function bind(state, k, params, buffers, groups) {
  const { device } = state;
  const uniform = device.createBuffer({ size: params.byteLength, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
  device.queue.writeBuffer(uniform, 0, params);
  let next = 0;
  const entries = k.kinds.map(([binding, kind]) => ({ binding, resource: { buffer: kind === 'uniform' ? uniform : buffers[next++] } }));
  return { pipeline: k.pipeline, group: device.createBindGroup({ layout: k.layout, entries }), groups };
}

export function submit(state, dispatches) {
  if (state.error) throw new Error(`WebGPU: ${state.error}`);
  const encoder = state.device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  for (const d of dispatches) {
    pass.setPipeline(d.pipeline);
    pass.setBindGroup(0, d.group);
    pass.dispatchWorkgroups(d.groups[0], d.groups[1], d.groups[2]);
  }
  pass.end();
  state.device.queue.submit([encoder.finish()]);
}

/** `size` bytes of a buffer, after every submitted dispatch; throws if the device failed meanwhile. */
export async function read(state, source, offset, size) {
  const { device } = state;
  const padded = Math.ceil(size / 4) * 4;
  const staging = device.createBuffer({ size: padded, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const encoder = device.createCommandEncoder();
  encoder.copyBufferToBuffer(source, offset, staging, 0, padded);
  device.queue.submit([encoder.finish()]);
  try {
    await staging.mapAsync(GPUMapMode.READ);
    if (state.error) throw new Error(`WebGPU: ${state.error}`);
    return new Uint8Array(staging.getMappedRange()).slice(0, size);
  } finally {
    staging.destroy();
  }
}
