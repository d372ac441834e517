#!/usr/bin/env node
// Predict with a linreg model.onnx from Node.js, with onnxruntime-node and nothing else.
//
//   node predict.mjs MODEL.onnx '[[1.0, 2.0, 3.0]]'
//   echo '[{"x0": 1, "x1": 2, "x2": 3}]' | node predict.mjs MODEL.onnx
//   node predict.mjs MODEL.onnx ROWS_JSON --on-unknown nan   # or error, reference
//
// Rows are arrays in feature order or objects keyed by feature name; the feature names, target
// names and dtype come from the model's own metadata. A tabular model (categorical columns,
// blanks) takes raw values: strings for levels, null for a blank. Prints
// {"features": [...], "targets": [...], "predictions": [[...], ...]} on stdout, plus
// prediction_lower/upper and mean_lower/upper for a model exported with --intervals, and
// contributions (per row {term: value}) and baseline for one exported with --contributions:
// baseline + the row's contributions = its prediction.
import { readFile } from 'node:fs/promises';
import * as ort from 'onnxruntime-node';
import { prepareFeeds, readContract, toContributions, toRows, withNanRows } from '../js/onnx-metadata.mjs';

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

async function main() {
  const args = process.argv.slice(2);
  const at = args.indexOf('--on-unknown');
  const onUnknown = at >= 0 ? args.splice(at, 2)[1] : undefined;
  const [modelPath, rowsArg] = args;
  if (!modelPath) throw new Error('usage: node predict.mjs MODEL.onnx [ROWS_JSON] [--on-unknown error|nan|reference]  (rows on stdin if omitted)');
  const bytes = await readFile(modelPath);
  const contract = readContract(bytes);
  let rows;
  try {
    rows = JSON.parse(rowsArg ?? (await readStdin()));
  } catch (e) {
    throw new Error(`rows are not valid JSON (${e.message})`);
  }
  const { feeds, nanRows } = prepareFeeds(rows, contract, ort.Tensor, onUnknown);
  const session = await ort.InferenceSession.create(bytes, { executionProviders: ['cpu'] });
  const outputs = withNanRows(await session.run(feeds), nanRows);
  if (nanRows.size) {
    console.error(`linreg-node-predict: warning: ${nanRows.size} of ${rows.length} row(s) could not be predicted (a level not seen in training, or a blank with no fill): their predictions are null (--on-unknown nan)`);
  }
  const result = { features: contract.features, targets: contract.targets, predictions: toRows(outputs.prediction) };
  // A model exported with --intervals has four more outputs, shaped like the prediction.
  for (const name of ['prediction_lower', 'prediction_upper', 'mean_lower', 'mean_upper']) {
    if (outputs[name]) result[name] = toRows(outputs[name]);
  }
  if (outputs.contributions && contract.contributions) {
    result.contributions = toContributions(outputs.contributions, contract);
    const { baseline } = contract.contributions;
    result.baseline = baseline.length === 1 ? baseline[0] : baseline;
  }
  console.log(JSON.stringify(result));
}

main().catch((e) => {
  console.error(`linreg-node-predict: error: ${e.message}`);
  process.exit(1);
});
