// Predict with a linreg model.onnx in the browser: onnxruntime-web (WebAssembly, one thread, so
// no cross-origin isolation is needed) and the model's own metadata for the form's fields.
import * as ort from './node_modules/onnxruntime-web/dist/ort.wasm.min.mjs';
import { readContract, toContributions, toFeeds, toRows } from '../js/onnx-metadata.mjs';

ort.env.wasm.numThreads = 1;
ort.env.wasm.wasmPaths = new URL('./node_modules/onnxruntime-web/dist/', import.meta.url).href;

const params = new URLSearchParams(location.search);
const status = document.getElementById('status');
const form = document.getElementById('form');
const fieldset = document.getElementById('features');
const result = document.getElementById('result');
const figure = document.getElementById('contributions');

// One bar per term and target: its contribution to the prediction, scaled to the largest one,
// right of the axis (green) when it raises the prediction, left (red) when it lowers it.
function drawContributions(row, contract, show) {
  const { terms, baseline } = contract.contributions;
  figure.replaceChildren();
  contract.targets.forEach((target, i) => {
    const values = contract.targets.length === 1 ? row : row[target];
    const scale = Math.max(...terms.map((t) => Math.abs(values[t] ?? 0))) || 1;
    figure.append(Object.assign(document.createElement('figcaption'), {
      textContent: `${target}: baseline ${show(baseline[i])} (the mean prediction) plus each term's contribution`,
    }));
    for (const term of terms) {
      const v = values[term] ?? NaN;
      const line = Object.assign(document.createElement('div'), { className: 'term' });
      const track = Object.assign(document.createElement('div'), { className: 'track' });
      const half = Number.isFinite(v) ? (50 * Math.abs(v)) / scale : 0;
      const bar = Object.assign(document.createElement('div'), { className: `bar ${v >= 0 ? 'up' : 'down'}` });
      Object.assign(bar.style, { width: `${half}%`, left: v >= 0 ? '50%' : `${50 - half}%` });
      track.append(bar);
      line.append(Object.assign(document.createElement('span'), { textContent: term }), track,
        Object.assign(document.createElement('span'), { className: 'value', textContent: Number.isFinite(v) ? show(v) : '—' }));
      figure.append(line);
    }
  });
  figure.hidden = false;
}

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
    if (outputs.contributions && contract.contributions) { // a model exported with --contributions
      const [row] = toContributions(outputs.contributions, contract);
      drawContributions(row, contract, show);
      figure.dataset.contributions = JSON.stringify(row);
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
