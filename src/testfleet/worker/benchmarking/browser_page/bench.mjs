// testfleet's browser benchmark page: runs one ONNX model with onnxruntime-web
// and times each session.run with performance.now (warm-up first, not timed).
// Loaded from the worker's own loopback site; every URL here is relative to it.
// Called by worker/benchmarking/backends/browser.py through page.evaluate:
//   await window.testfleetBench(request) -> {times_ms, outputs, ort_version, ...}
import * as ort from './ort.webgpu.min.mjs';

const ARRAYS = {
  float32: Float32Array, float16: Uint16Array, int64: BigInt64Array, int32: Int32Array,
  uint8: Uint8Array, int8: Int8Array, bool: Uint8Array, float64: Float64Array,
};

function fromBase64(text) {
  const raw = atob(text);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i += 1) bytes[i] = raw.charCodeAt(i);
  return bytes.buffer;
}

function toBase64(view) {
  const bytes = new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
  let out = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    out += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(out);
}

function feeds(inputs) {
  const result = {};
  for (const input of inputs) {
    const Kind = ARRAYS[input.dtype];
    if (!Kind) throw new Error(`input ${input.name}: dtype ${input.dtype} is not supported`);
    result[input.name] = new ort.Tensor(input.dtype, new Kind(fromBase64(input.data)), input.dims);
  }
  return result;
}

async function sessionFor(request) {
  ort.env.wasm.wasmPaths = new URL('./', import.meta.url).href;
  ort.env.wasm.numThreads = request.threads;
  ort.env.wasm.simd = true;
  ort.env.logLevel = 'error';
  if (request.device === 'webgpu') {
    const adapter = navigator.gpu ? await navigator.gpu.requestAdapter() : null;
    if (!adapter) return { error: 'no WebGPU adapter in this browser' };
  }
  const session = await ort.InferenceSession.create(request.model_url, {
    executionProviders: [request.device],
    graphOptimizationLevel: 'all',
  });
  return { session };
}

window.testfleetBench = async (request) => {
  const started = await sessionFor(request);
  if (started.error) return { unsupported: started.error };
  const { session } = started;
  try {
    const input = feeds(request.inputs);
    let outputs = null;
    for (let i = 0; i < request.warmup; i += 1) await session.run(input);
    const times = [];
    for (let i = 0; i < request.iterations; i += 1) {
      const t0 = performance.now();
      outputs = await session.run(input);
      times.push(performance.now() - t0);
    }
    if (outputs === null) outputs = await session.run(input);
    const named = request.output_names.length ? request.output_names : session.outputNames;
    return {
      times_ms: times,
      outputs: named.map((name) => ({
        name, dtype: outputs[name].type, dims: outputs[name].dims,
        data: toBase64(outputs[name].data),
      })),
      ort_version: ort.env.versions ? String(ort.env.versions.web || '') : '',
      threads: ort.env.wasm.numThreads,
      cross_origin_isolated: self.crossOriginIsolated === true,
    };
  } finally {
    await session.release();
  }
};
window.testfleetReady = true;
