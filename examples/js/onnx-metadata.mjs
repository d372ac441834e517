// Read an ONNX model's metadata_props (the key/value strings linreg-export writes: feature_names,
// target_names, dtype, ...) straight from the protobuf bytes. onnxruntime's JavaScript API does
// not expose custom metadata, and this needs no protobuf library: ModelProto field 14 holds
// repeated StringStringEntryProto { string key = 1; string value = 2; }.

function readVarint(bytes, pos) {
  let value = 0;
  let shift = 0;
  for (;;) {
    if (pos >= bytes.length) throw new Error('truncated ONNX file');
    const b = bytes[pos++];
    value += (b & 0x7f) * 2 ** shift;
    if (b < 0x80) return [value, pos];
    shift += 7;
  }
}

// Yields [fieldNumber, wireType, payload] for each field of one protobuf message.
function* fields(bytes) {
  let pos = 0;
  while (pos < bytes.length) {
    let tag;
    [tag, pos] = readVarint(bytes, pos);
    const field = Math.floor(tag / 8);
    const wire = tag % 8;
    if (wire === 0) {
      let v;
      [v, pos] = readVarint(bytes, pos);
      yield [field, wire, v];
    } else if (wire === 1) {
      pos += 8;
    } else if (wire === 2) {
      let len;
      [len, pos] = readVarint(bytes, pos);
      yield [field, wire, bytes.subarray(pos, pos + len)];
      pos += len;
    } else if (wire === 5) {
      pos += 4;
    } else {
      throw new Error(`unsupported protobuf wire type ${wire}: is this an ONNX file?`);
    }
  }
}

/** The model's metadata_props as a plain object of strings. */
export function readMetadata(modelBytes) {
  const bytes = modelBytes instanceof Uint8Array ? modelBytes : new Uint8Array(modelBytes);
  const decoder = new TextDecoder();
  const meta = {};
  for (const [field, wire, payload] of fields(bytes)) {
    if (field !== 14 || wire !== 2) continue;
    let key = '';
    let value = '';
    for (const [f, w, p] of fields(payload)) {
      if (w !== 2) continue;
      if (f === 1) key = decoder.decode(p);
      if (f === 2) value = decoder.decode(p);
    }
    meta[key] = value;
  }
  return meta;
}

/** The model contract linreg-export writes: names in order, the dtype, and for a tabular model
 *  (categorical columns or blanks) one spec per raw column (kind, levels, fill, policy) and
 *  the texts that mean a blank (NA tokens such as "NA", "N/A", "NaN": `naValues`). */
export function readContract(modelBytes) {
  const meta = readMetadata(modelBytes);
  if (!meta.feature_names || !meta.target_names) {
    throw new Error('no feature_names/target_names in the model metadata: was it written by linreg-export?');
  }
  return {
    features: JSON.parse(meta.feature_names),
    targets: JSON.parse(meta.target_names),
    dtype: meta.dtype === 'float64' ? 'float64' : 'float32',
    columns: meta['linreg.columns'] ? JSON.parse(meta['linreg.columns']) : null,
    naValues: new Set(meta['linreg.na_values'] ? JSON.parse(meta['linreg.na_values']) : []),
    // linreg-export --contributions: {terms, baseline (one per target)}, or null
    contributions: meta['linreg.contributions'] ? JSON.parse(meta['linreg.contributions']) : null,
    metadata: meta,
  };
}

/** Rows (arrays in feature order, or objects keyed by feature name) as one flat typed array.
 *  A cell that is not a finite number is an error, unless `nanRows` (a Set) is given: the
 *  row is then added to it and its cell fed as 0 (`onUnknown: 'nan'`). */
export function toTensorData(rows, contract, nanRows = null) {
  if (!Array.isArray(rows) || rows.length === 0) throw new Error('expected a non-empty array of rows');
  const n = contract.features.length;
  const data = contract.dtype === 'float64' ? new Float64Array(rows.length * n) : new Float32Array(rows.length * n);
  rowValues(rows, contract).forEach((values, r) => {
    values.forEach((v, c) => {
      if (typeof v !== 'number' || !Number.isFinite(v)) {
        if (nanRows && (v === null || typeof v === 'number')) {
          nanRows.add(r);
          v = 0;
        } else {
          throw new Error(`row ${r + 1}, column '${contract.features[c]}': ${JSON.stringify(v)} is not a finite number`);
        }
      }
      data[r * n + c] = v;
    });
  });
  return data;
}

function rowValues(rows, contract) {
  const n = contract.features.length;
  return rows.map((row, r) => {
    const values = Array.isArray(row) ? row : contract.features.map((f) => {
      if (row === null || typeof row !== 'object' || !(f in row)) throw new Error(`row ${r + 1}: missing feature ${f}`);
      return row[f];
    });
    if (values.length !== n) throw new Error(`row ${r + 1}: ${values.length} values, the model needs ${n} (${contract.features.join(', ')})`);
    return values;
  });
}

// A raw value as a level, by linreg's rule: text as it is, null as the blank "", numbers in
// their shortest form (integers in plain digits), booleans as true/false.
function levelText(v) {
  if (v === null || v === undefined || (typeof v === 'number' && Number.isNaN(v))) return '';
  if (typeof v === 'string') return v;
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (typeof v === 'number') return String(v);
  throw new Error(`${JSON.stringify(v)} is not a level`);
}

const POLICIES = [undefined, 'error', 'nan', 'reference'];

/** The session's feeds for rows: one `features` tensor, or for a tabular model one [rows, 1]
 *  tensor per raw column (strings for categorical columns, NaN for a numeric blank; a text
 *  among the model's NA tokens is a blank). Cells the model cannot take (a blank with no fill,
 *  a level not seen in training) are errors naming the row and column, as in linreg's Python
 *  runtime; see `prepareFeeds` for the other policies. */
export function toFeeds(rows, contract, Tensor) {
  return prepareFeeds(rows, contract, Tensor).feeds;
}

/** `{feeds, nanRows}` under a per-call policy for the cells the model cannot take, as linreg's
 *  `Predictor.predict(rows, on_unknown=...)`: `undefined` keeps the model's own (its
 *  `unknown`), 'error' refuses an unseen level whatever the model says, 'nan' feeds such a row
 *  harmless values and lists it in `nanRows` (a Set: set its predictions NaN after the run,
 *  `withNanRows`), 'reference' predicts an unseen level as its column's reference level. */
export function prepareFeeds(rows, contract, Tensor, onUnknown = undefined) {
  if (!POLICIES.includes(onUnknown)) throw new Error(`onUnknown ${JSON.stringify(onUnknown)}: use error, nan or reference`);
  const nanRows = new Set();
  if (!contract.columns) {
    const data = toTensorData(rows, contract, onUnknown === 'nan' ? nanRows : null);
    return { feeds: { features: new Tensor(contract.dtype, data, [rows.length, contract.features.length]) }, nanRows };
  }
  if (!Array.isArray(rows) || rows.length === 0) throw new Error('expected a non-empty array of rows');
  const all = rowValues(rows, contract);
  const feeds = {};
  const fix = '; --on-unknown reference predicts it as the reference level, --on-unknown nan gives the row NaN';
  contract.columns.forEach((col, c) => {
    const where = (r) => `row ${r + 1}, column '${col.name}'`;
    if (col.kind === 'categorical') {
      const known = new Set(col.levels);
      const data = all.map((values, r) => {
        const text = levelText(values[c]);
        const level = contract.naValues.has(text) ? '' : text;
        if (known.has(level)) return level;
        const policy = onUnknown ?? (col.unknown === 'error' ? 'error' : 'model');
        if (policy === 'nan') {
          nanRows.add(r);
          return col.levels[0];
        }
        if (policy === 'reference' && (col.reference === null || col.reference === undefined)) {
          throw new Error(`${where(r)}: level ${JSON.stringify(level)} was not seen in training; onUnknown 'reference' needs a reference level, and '${col.name}' has none (the model has no intercept)`);
        }
        if (policy === 'reference') return col.reference;
        if (policy === 'model') return level; // the graph predicts it as the reference level
        throw new Error(level === '' ? `${where(r)}: missing value; no blanks were seen here in training${fix}`
          : `${where(r)}: level ${JSON.stringify(level)} was not seen in training (known: ${col.levels.slice(0, 10).map((l) => JSON.stringify(l)).join(', ')})${fix}`);
      });
      feeds[col.name] = new Tensor('string', data, [rows.length, 1]);
      return;
    }
    const data = contract.dtype === 'float64' ? new Float64Array(rows.length) : new Float32Array(rows.length);
    all.forEach((values, r) => {
      let v = values[c];
      if (v === null || v === undefined || v === '' || (typeof v === 'number' && Number.isNaN(v))
          || (typeof v === 'string' && contract.naValues.has(v))) {
        if (col.fill === null || col.fill === undefined) {
          if (onUnknown !== 'nan') throw new Error(`${where(r)}: missing value; this model was trained without --impute (--on-unknown nan gives such a row NaN)`);
          nanRows.add(r);
          v = 0;
        } else {
          v = NaN;
        }
      } else if (typeof v === 'string' && v.trim() !== '' && Number.isFinite(Number(v))) {
        v = Number(v);
      }
      if (typeof v === 'number' && onUnknown === 'nan' && !Number.isNaN(v) && !Number.isFinite(v)) {
        nanRows.add(r);
        v = 0;
      }
      if (typeof v !== 'number' || (!Number.isNaN(v) && !Number.isFinite(v))) {
        throw new Error(`${where(r)}: ${JSON.stringify(values[c])} is not a finite number`);
      }
      data[r] = v;
    });
    feeds[col.name] = new Tensor(contract.dtype, data, [rows.length, 1]);
  });
  return { feeds, nanRows };
}

/** The outputs with NaN in the rows of `nanRows` (every column of each output tensor). */
export function withNanRows(outputs, nanRows) {
  for (const tensor of Object.values(outputs)) {
    const cols = tensor.dims[1];
    for (const r of nanRows) tensor.data.fill(NaN, r * cols, (r + 1) * cols);
  }
  return outputs;
}

/** The `contributions` output ([rows, targets x terms], target-major) as one object per row:
 *  {term: value} for a one-target model, else {target: {term: value}}; NaN as null. */
export function toContributions(tensor, contract) {
  const { terms } = contract.contributions;
  const byTerm = (values) => Object.fromEntries(terms.map((t, k) => [t, Number.isNaN(values[k]) ? null : values[k]]));
  return toRows(tensor).map((row) => {
    const perTarget = contract.targets.map((_, i) => byTerm(row.slice(i * terms.length, (i + 1) * terms.length)));
    return contract.targets.length === 1 ? perTarget[0]
      : Object.fromEntries(contract.targets.map((t, i) => [t, perTarget[i]]));
  });
}

/** The output tensor as one array of target values per row. */
export function toRows(tensor) {
  const [rows, cols] = tensor.dims;
  const out = [];
  for (let r = 0; r < rows; r++) out.push(Array.from(tensor.data.subarray(r * cols, (r + 1) * cols)));
  return out;
}
