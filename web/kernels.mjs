// Array work the Python engines hand to JavaScript, so that Python never loops over tensor elements:
// packing token ids into int64 tensors, pooling hidden states, normalising.

/** Token ids of one encoding cut to `max` tokens, keeping the final special token ([SEP]). */
function cut(ids, max) {
  return ids.length <= max ? ids : [...ids.slice(0, max - 1), ids[ids.length - 1]];
}

/** Encodings ({ids, token_type_ids?}) → padded int64 feeds, and the mask kept for pooling. */
export function pack(ort, encodings, maxLength, inputNames) {
  const rows = encodings.map((e) => cut(Array.from(e.ids), maxLength));
  const types = encodings.map((e, i) => cut(Array.from(e.token_type_ids ?? []), maxLength).slice(0, rows[i].length));
  const width = Math.max(1, ...rows.map((r) => r.length));
  const n = rows.length;
  const ids = new BigInt64Array(n * width);
  const mask = new BigInt64Array(n * width);
  const typeIds = new BigInt64Array(n * width);
  const maskNum = new Uint8Array(n * width);
  rows.forEach((row, i) => {
    for (let j = 0; j < row.length; j++) {
      ids[i * width + j] = BigInt(row[j]);
      mask[i * width + j] = 1n;
      maskNum[i * width + j] = 1;
      typeIds[i * width + j] = BigInt(types[i][j] ?? 0);
    }
  });
  const dims = [n, width];
  const feeds = { input_ids: new ort.Tensor('int64', ids, dims), attention_mask: new ort.Tensor('int64', mask, dims) };
  if (inputNames.includes('token_type_ids')) feeds.token_type_ids = new ort.Tensor('int64', typeIds, dims);
  return { feeds, mask: maskNum, width, tokens: rows.map((r) => r.length) };
}

/** Hidden states [n, width, h] → one vector per row (mean over the mask, or CLS), optionally L2-normalised. */
export function pool(hidden, mask, width, how, normalize) {
  const [n, , h] = hidden.dims;
  const data = hidden.data;
  const out = [];
  for (let i = 0; i < n; i++) {
    const v = new Float32Array(h);
    if (how === 'cls') {
      v.set(data.subarray(i * width * h, i * width * h + h));
    } else {
      let count = 0;
      for (let t = 0; t < width; t++) {
        if (!mask[i * width + t]) continue;
        count++;
        const base = (i * width + t) * h;
        for (let k = 0; k < h; k++) v[k] += data[base + k];
      }
      for (let k = 0; k < h; k++) v[k] /= Math.max(count, 1e-9);
    }
    if (normalize) {
      let norm = 0;
      for (let k = 0; k < h; k++) norm += v[k] * v[k];
      norm = Math.max(Math.sqrt(norm), 1e-12);
      for (let k = 0; k < h; k++) v[k] /= norm;
    }
    out.push(Array.from(v));
  }
  return out;
}

/** Cross-encoder logits [n] or [n, 1|2] → relevance in [0, 1]. */
export function relevance(logits) {
  const d = logits.data;
  const width = logits.dims.length > 1 ? logits.dims[logits.dims.length - 1] : 1;
  const out = [];
  for (let i = 0; i < d.length / width; i++) {
    if (width === 1) out.push(1 / (1 + Math.exp(-d[i])));
    else {
      const a = d[i * 2], b = d[i * 2 + 1], m = Math.max(a, b);
      out.push(Math.exp(b - m) / (Math.exp(a - m) + Math.exp(b - m)));
    }
  }
  return out;
}

/** Cosine similarity of two equal-length arrays. */
export function cosine(a, b) {
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) { dot += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }
  return na && nb ? dot / Math.sqrt(na * nb) : 0;
}

/** Hex sha256 of bytes (WebCrypto). */
export async function sha256(bytes) {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}
