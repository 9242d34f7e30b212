// testfleet's browser benchmark page: one ONNX model run by onnxruntime-web on
// the wasm or WebGPU execution provider, each session.run timed with
// performance.now (warm-up first, untimed). Loaded from the worker's own
// loopback site: every URL here is relative to it, nothing else is reachable.
// Driven by worker/benchmarking/backends/browser.py through page.evaluate:
//   testfleetLoad(request)            -> {ort_version, threads, ...} | {unsupported}
//   testfleetRun(inputs)              -> [{name, dtype, dims, data (base64)}]
//   testfleetTime(inputs, warm, iter) -> [milliseconds per iteration]
//   testfleetClose()
import * as ort from './ort.webgpu.min.mjs';

const ARRAYS = {
  float32: Float32Array, float16: Uint16Array, float64: Float64Array, int64: BigInt64Array,
  int32: Int32Array, int8: Int8Array, uint8: Uint8Array, bool: Uint8Array,
};

let session = null;

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

async function adapterInfo() {
  const adapter = navigator.gpu ? await navigator.gpu.requestAdapter() : null;
  if (!adapter) return null;
  const info = adapter.info || {};
  return [info.vendor, info.architecture, info.device, info.description]
    .filter((p) => p).join(' ') || 'unnamed adapter';
}

window.testfleetLoad = async (request) => {
  ort.env.wasm.wasmPaths = new URL('./', import.meta.url).href;
  ort.env.wasm.numThreads = request.threads;
  ort.env.logLevel = 'error';
  let adapter = null;
  if (request.device === 'webgpu') {
    adapter = await adapterInfo();
    // Never a wasm result in WebGPU's name: no adapter, no run.
    if (adapter === null) return { unsupported: 'no WebGPU adapter in this browser' };
  }
  session = await ort.InferenceSession.create(request.model_url, {
    executionProviders: [request.device],
    graphOptimizationLevel: 'all',
    externalData: request.external_data,
  });
  return {
    ort_version: String((ort.env.versions && ort.env.versions.web) || ''),
    threads: ort.env.wasm.numThreads,
    cross_origin_isolated: self.crossOriginIsolated === true,
    adapter,
    output_names: session.outputNames,
  };
};

window.testfleetRun = async (inputs) => {
  const outputs = await session.run(feeds(inputs));
  return session.outputNames.map((name) => ({
    name, dtype: outputs[name].type, dims: outputs[name].dims, data: toBase64(outputs[name].data),
  }));
};

window.testfleetTime = async (inputs, warmup, iterations) => {
  const input = feeds(inputs);
  for (let i = 0; i < warmup; i += 1) await session.run(input);
  const times = [];
  for (let i = 0; i < iterations; i += 1) {
    const started = performance.now();
    await session.run(input);
    times.push(performance.now() - started);
  }
  return times;
};

window.testfleetClose = async () => {
  if (session !== null) await session.release();
  session = null;
};

window.testfleetReady = true;
