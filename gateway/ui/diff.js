// A shadow sample mismatch, side by side: legacy's answer and the extracted service's, with the
// status, the compared headers and the JSON paths that differ marked (<mark>) on both sides, and
// a path missing on one side shown as "absent" there. Values the gateway redacted arrive as
// "[redacted]" and are shown as such: nothing here can bring them back.

import { h, fmt } from './lib.js';

const REDACTED = '[redacted]';

function escapeSegment(k) {
  return String(k).replace(/~/g, '~0').replace(/\//g, '~1');
}

function unescapeSegment(k) {
  return k.replace(/~1/g, '/').replace(/~0/g, '~');
}

/** Splits a JSON pointer into its parent pointer and last (unescaped) segment. */
function parentOf(pointer) {
  const i = pointer.lastIndexOf('/');
  return [pointer.slice(0, i), unescapeSegment(pointer.slice(i + 1))];
}

/**
 * Parses JSON into a tree that keeps what JSON.parse would lose for a diff: numbers as written
 * (an id beyond 2^53 stays exact), keys in their order (duplicates too). Nodes: {t: 'o', e:
 * [[key, node]]}, {t: 'a', e: [node]}, {t: 's', v}, and {t: 'n' | 'b' | 'z', raw}.
 */
export function parseJson(text) {
  let i = 0;
  const NUM = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
  const fail = () => {
    throw new SyntaxError('not JSON at offset ' + i);
  };
  const ws = () => {
    while (i < text.length && ' \t\n\r'.includes(text[i])) i++;
  };
  function str() {
    const start = i++;
    while (i < text.length) {
      if (text[i] === '\\') i += 2;
      else if (text[i++] === '"') return JSON.parse(text.slice(start, i));
    }
    return fail();
  }
  function list(close, item) {
    const e = [];
    i++;
    ws();
    if (text[i] === close) {
      i++;
      return e;
    }
    for (;;) {
      e.push(item());
      ws();
      const c = text[i++];
      if (c === close) return e;
      if (c !== ',') fail();
    }
  }
  function value(depth) {
    if (depth > 200) fail();
    ws();
    const c = text[i];
    if (c === '{') {
      return { t: 'o', e: list('}', () => {
        ws();
        if (text[i] !== '"') fail();
        const k = str();
        ws();
        if (text[i++] !== ':') fail();
        return [k, value(depth + 1)];
      }) };
    }
    if (c === '[') return { t: 'a', e: list(']', () => value(depth + 1)) };
    if (c === '"') return { t: 's', v: str() };
    NUM.lastIndex = i;
    const m = NUM.exec(text);
    if (m) {
      i += m[0].length;
      return { t: 'n', raw: m[0] };
    }
    for (const [lit, t] of [['true', 'b'], ['false', 'b'], ['null', 'z']]) {
      if (text.startsWith(lit, i)) {
        i += lit.length;
        return { t, raw: lit };
      }
    }
    return fail();
  }
  const v = value(0);
  ws();
  if (i !== text.length) fail();
  return v;
}

function scalar(node) {
  if (node.t === 's') {
    if (node.v === REDACTED) return h('span', { class: 'redacted', title: 'redacted by the gateway' }, JSON.stringify(node.v));
    return h('span', { class: 'j-str' }, JSON.stringify(node.v));
  }
  return h('span', { class: node.t === 'n' ? 'j-num' : node.t === 'b' ? 'j-bool' : 'j-null' }, node.raw);
}

/**
 * Pretty-prints `value` as DOM lines; every value whose pointer is in `marks` is wrapped in
 * <mark class="diff" data-pointer=...>, and every marked path that is absent here but whose
 * parent exists gets an "absent" line.
 */
function renderJson(value, marks) {
  const out = [];
  const absentUnder = new Map();
  for (const p of marks) {
    if (!p) continue;
    const [parent, key] = parentOf(p);
    if (!absentUnder.has(parent)) absentUnder.set(parent, []);
    absentUnder.get(parent).push(key);
  }
  const pad = (n) => '  '.repeat(n);
  function wrap(pointer, nodes) {
    if (!marks.has(pointer)) return nodes;
    return [h('mark', { class: 'diff', 'data-pointer': pointer, title: 'differs: ' + (pointer || '(whole body)') }, nodes)];
  }
  function walk(v, pointer, depth, prefix, comma) {
    if (v.t !== 'o' && v.t !== 'a') {
      out.push(h('span', { class: 'line' }, pad(depth), wrap(pointer, [prefix, scalar(v)]), comma, '\n'));
      return;
    }
    const arr = v.t === 'a';
    const entries = arr ? v.e.map((x, i) => [String(i), x]) : v.e;
    const present = new Set(entries.map(([k]) => k));
    const missing = (absentUnder.get(pointer) || []).filter((k) => !present.has(k));
    if (!entries.length && !missing.length) {
      out.push(h('span', { class: 'line' }, pad(depth), wrap(pointer, [prefix, arr ? '[]' : '{}']), comma, '\n'));
      return;
    }
    const open = h('span', { class: 'line' }, pad(depth), prefix, arr ? '[' : '{', '\n');
    const start = out.length;
    out.push(open);
    // an absent key goes where it would sort when the keys are sorted (serde_json's order)
    const items = entries.map(([k, child]) => ({ k, child, present: true }))
      .concat(missing.map((k) => ({ k, present: false })));
    const sorted = !arr && entries.every((e, i) => i === 0 || entries[i - 1][0] <= e[0]);
    if (sorted) items.sort((a, b) => (a.k < b.k ? -1 : a.k > b.k ? 1 : 0));
    items.forEach((it, i) => {
      const sep = i === items.length - 1 ? '' : ',';
      const p = pointer + '/' + escapeSegment(it.k);
      if (it.present) {
        walk(it.child, p, depth + 1, arr ? '' : h('span', { class: 'j-key' }, JSON.stringify(it.k) + ': '), sep);
      } else {
        out.push(h('span', { class: 'line' }, pad(depth + 1),
          h('mark', { class: 'diff absent', 'data-pointer': p, title: 'absent on this side' },
            arr ? '' : JSON.stringify(it.k) + ': ', '(absent)'), sep, '\n'));
      }
    });
    out.push(h('span', { class: 'line' }, pad(depth), arr ? ']' : '}', comma, '\n'));
    if (marks.has(pointer)) {
      // the whole container differs (e.g. a multiset array): mark every line of it
      const lines = out.splice(start);
      out.push(h('mark', { class: 'diff block', 'data-pointer': pointer, title: 'differs: ' + (pointer || '(whole body)') }, lines));
    }
  }
  walk(value, '', 0, '', '');
  return out;
}

function bodyView(side, marks, bytesDiffer) {
  if (side.body === null || side.body === undefined) {
    return h('p', { class: 'muted' }, `Body not kept (${fmt.bytes(side.body_len)}, over max_body).`);
  }
  if (side.body === '') return h('p', { class: 'muted' }, 'Empty body.');
  let parsed;
  try {
    parsed = parseJson(side.body);
  } catch (_) {
    const pre = h('pre', { class: 'body' }, side.body);
    return bytesDiffer ? h('mark', { class: 'diff block', 'data-pointer': 'body' }, pre) : pre;
  }
  return h('pre', { class: 'body json' }, renderJson(parsed, marks));
}

function headersView(headers, differing) {
  const names = Object.keys(headers || {}).sort();
  const rows = names.map((n) => {
    const v = headers[n];
    const value = v === REDACTED ? h('span', { class: 'redacted', title: 'redacted by the gateway' }, v) : v;
    const cell = differing.has(n.toLowerCase()) ? h('mark', { class: 'diff', 'data-header': n }, value) : value;
    return h('tr', {}, h('th', { scope: 'row' }, n), h('td', {}, cell));
  });
  for (const n of differing) {
    if (!names.includes(n)) {
      rows.push(h('tr', {}, h('th', { scope: 'row' }, n),
        h('td', {}, h('mark', { class: 'diff absent', 'data-header': n }, '(absent)'))));
    }
  }
  return h('details', { class: 'headers', open: differing.size > 0 },
    h('summary', {}, `Headers (${names.length})`),
    h('table', { class: 'kv' }, h('tbody', {}, rows)));
}

function pane(label, cls, side, d) {
  return h('section', { class: 'pane ' + cls, 'aria-label': label + ' answer' },
    h('h4', {}, label),
    h('p', { class: 'pane-meta' },
      'status ', d.status ? h('mark', { class: 'diff', 'data-pointer': 'status' }, String(side.status)) : String(side.status),
      ' · ', fmt.ms(side.latency_ms), ' · ', fmt.bytes(side.body_len)),
    headersView(side.headers, d.headers),
    bodyView(side, d.json, d.bytes));
}

function show(v, text) {
  if (typeof text === 'string') return text; // the server's rendering: big numbers stay exact
  return v === null || v === undefined ? '(absent)' : JSON.stringify(v);
}

function differenceItem(d) {
  switch (d.kind) {
    case 'json':
      return h('li', {}, h('code', {}, d.pointer || '(whole body)'), ': legacy ', h('code', {}, show(d.legacy, d.legacy_text)),
        ', extracted ', h('code', {}, show(d.shadow, d.shadow_text)));
    case 'status':
      return h('li', {}, 'status: legacy ', h('code', {}, String(d.legacy)), ', extracted ', h('code', {}, String(d.shadow)));
    case 'header':
      return h('li', {}, 'header ', h('code', {}, d.name), ': legacy ', h('code', {}, show(d.legacy)),
        ', extracted ', h('code', {}, show(d.shadow)));
    case 'bytes':
      return h('li', {}, `body bytes differ (legacy ${fmt.bytes(d.legacy_len)}, extracted ${fmt.bytes(d.shadow_len)})`);
    default:
      return h('li', {}, JSON.stringify(d));
  }
}

/** A stable id for a sample (to keep it open across refreshes). */
export function sampleKey(sample) {
  return String(sample.at_unix_ms) + ' ' + (sample.request_id || '');
}

/** One sample mismatch as a <details> (open when `open`). */
export function sampleView(sample, open) {
  const diffs = sample.differences || [];
  const d = {
    status: diffs.some((x) => x.kind === 'status'),
    bytes: diffs.some((x) => x.kind === 'bytes'),
    json: new Set(diffs.filter((x) => x.kind === 'json').map((x) => x.pointer)),
    headers: new Set(diffs.filter((x) => x.kind === 'header').map((x) => x.name.toLowerCase())),
  };
  const req = sample.request || {};
  const noise = sample.noise || [];
  return h('details', { class: 'sample', open, 'data-sample': sampleKey(sample) },
    h('summary', {},
      h('code', {}, (req.method || '?') + ' ' + (req.uri || '?')),
      h('span', { class: 'muted' }, ' · ' + fmt.time(sample.at_unix_ms) +
        (sample.request_id ? ' · request ' + sample.request_id : '') +
        ` · ${diffs.length} difference${diffs.length === 1 ? '' : 's'}`)),
    h('ul', { class: 'differences', 'aria-label': 'Differences' }, diffs.map(differenceItem)),
    noise.length ? h('p', { class: 'muted' }, `Also ${noise.length} learnt-noise difference(s), not counted: `,
      noise.map((n) => n.pointer || n.name || n.kind).join(', ')) : null,
    h('div', { class: 'panes' },
      pane('Legacy', 'legacy', sample.legacy || {}, d),
      pane('Extracted', 'extracted', sample.shadow || {}, d)));
}
