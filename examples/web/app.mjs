// Predict with a linreg model.onnx in the browser: onnxruntime-web (WebAssembly, one thread, so
// no cross-origin isolation is needed) and the model's own metadata for the form's fields.
import * as ort from './node_modules/onnxruntime-web/dist/ort.wasm.min.mjs';
import { readContract, toFeeds, toRows } from '../js/onnx-metadata.mjs';

ort.env.wasm.numThreads = 1;
ort.env.wasm.wasmPaths = new URL('./node_modules/onnxruntime-web/dist/', import.meta.url).href;

const params = new URLSearchParams(location.search);
const status = document.getElementById('status');
const form = document.getElementById('form');
const fieldset = document.getElementById('features');
const result = document.getElementById('result');

function fail(message) {
  document.body.dataset.state = 'error';
  result.className = 'error';
  result.textContent = message;
}

async function main() {
  const modelUrl = params.get('model') ?? 'model.onnx';
  const response = await fetch(modelUrl);
  if (!response.ok) throw new Error(`cannot fetch ${modelUrl}: HTTP ${response.status}`);
  const bytes = new Uint8Array(await response.arrayBuffer());
  const contract = readContract(bytes);
  const session = await ort.InferenceSession.create(bytes, { executionProviders: ['wasm'] });

  // One field per column, in the model's order: a number field, or for a categorical column a
  // drop-down of the levels seen in training (from the model's metadata). A numeric column
  // with a learned fill may be left blank.
  const columns = contract.columns ?? contract.features.map((name) => ({ name, kind: 'numeric', fill: null }));
  const inputs = columns.map((col) => {
    const label = document.createElement('label');
    label.textContent = col.name;
    let input;
    if (col.kind === 'categorical') {
      input = Object.assign(document.createElement('select'), { name: col.name });
      for (const level of col.levels) {
        input.append(Object.assign(document.createElement('option'), { value: level, textContent: level === '' ? '(blank)' : level }));
      }
    } else {
      const blankOk = col.fill !== null && col.fill !== undefined;
      input = Object.assign(document.createElement('input'), {
        type: 'number', step: 'any', name: col.name, required: !blankOk, value: blankOk ? '' : '0',
        placeholder: blankOk ? `blank = ${col.fill}` : '',
      });
    }
    label.append(input);
    fieldset.append(label);
    return input;
  });
  status.textContent = `${modelUrl}: ${contract.features.length} feature(s) → ${contract.targets.join(', ')} (${contract.dtype})`;
  form.hidden = false;

  async function predict() {
    const row = inputs.map((input, i) => (columns[i].kind === 'categorical' ? input.value
      : (input.value === '' && columns[i].fill != null ? null : Number(input.value))));
    const outputs = await session.run(toFeeds([row], contract, ort.Tensor));
    const [values] = toRows(outputs.prediction);
    result.className = '';
    const digits = contract.dtype === 'float32' ? 7 : 15; // what the dtype can hold
    const show = (v) => Number(v.toPrecision(digits));
    const level = contract.metadata['linreg.intervals'] ? JSON.parse(contract.metadata['linreg.intervals']).level : null;
    result.textContent = contract.targets.map((t, i) => {
      let text = `${t} = ${show(values[i])}`;
      if (level !== null) { // a model exported with --intervals
        const [lo, hi, mlo, mhi] = ['prediction_lower', 'prediction_upper', 'mean_lower', 'mean_upper'].map((n) => toRows(outputs[n])[0][i]);
        text += ` (${level * 100}% prediction interval ${show(lo)} to ${show(hi)}; mean ${show(mlo)} to ${show(mhi)})`;
      }
      return text;
    }).join('\n');
    result.dataset.predictions = JSON.stringify(values);
    if (level !== null) {
      result.dataset.intervals = JSON.stringify(Object.fromEntries(['prediction_lower', 'prediction_upper', 'mean_lower', 'mean_upper'].map((n) => [n, toRows(outputs[n])[0]])));
    }
    document.body.dataset.state = 'done';
  }

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    predict().catch((e) => fail(e.message));
  });
  document.body.dataset.state = 'ready';
  if (params.has('row')) {
    // A text the model reads as a blank (NA, N/A, ...: its NA tokens) fills the field blank.
    params.get('row').split(',').forEach((v, i) => { if (inputs[i]) inputs[i].value = contract.naValues.has(v) ? '' : v; });
    await predict();
  }
}

main().catch((e) => fail(e.message));
