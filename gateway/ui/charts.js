// Line charts as inline SVG, drawn at the width of their container. Each has a <title> and a
// <desc> that says in words what the lines show, a legend in text, and the numbers themselves in
// a table under "Data table", so nothing is only a picture.

import { h, s, fmt } from './lib.js';

const HEIGHT = 200;
const M = { left: 56, right: 14, top: 12, bottom: 26 };

const FORMAT = {
  pct: (v) => fmt.pct(v, 1),
  ms: (v) => fmt.ms(v),
  rps: (v) => fmt.rps(v),
};

function extent(series) {
  const vals = series.flatMap((x) => x.values).filter((v) => v !== null && v !== undefined);
  if (!vals.length) return null;
  return [Math.min(...vals), Math.max(...vals)];
}

/** Round numbers for the y axis: [lo, hi] widened to a "nice" step. */
function niceDomain(lo, hi, kind, zoom) {
  if (kind === 'pct' && zoom) {
    // match rates live near 100%: zoom in, but show the bottom of the scale in the labels
    const bottom = Math.max(0, Math.floor((lo - 0.02) * 20) / 20);
    return [Math.min(bottom, 0.95), 1];
  }
  if (kind === 'pct') return [0, Math.min(1, Math.max(0.05, hi * 1.2))];
  const top = Math.max(hi * 1.15, kind === 'ms' ? 1 : 0.1);
  const mag = Math.pow(10, Math.floor(Math.log10(top)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((st) => top / st <= 5) || 10 * mag;
  return [0, Math.ceil(top / step) * step];
}

function describe(opts, series, t) {
  if (!t.length || !extent(series)) return opts.empty || 'No data yet.';
  const f = FORMAT[opts.kind];
  const span = 'from ' + fmt.time(t[0]) + ' to ' + fmt.time(t[t.length - 1]);
  const parts = series.map((x) => {
    const vals = x.values.filter((v) => v !== null && v !== undefined);
    if (!vals.length) return x.label + ': no data';
    return x.label + ': latest ' + f(vals[vals.length - 1]) + ', lowest ' + f(Math.min(...vals)) +
      ', highest ' + f(Math.max(...vals));
  });
  return opts.title + ', ' + span + '. ' + parts.join('; ') + '.';
}

function dataTable(opts, series, t, open) {
  const f = FORMAT[opts.kind];
  const rows = t.map((ts, i) => h('tr', {},
    h('th', { scope: 'row' }, fmt.time(ts)),
    series.map((x) => h('td', { class: 'num' }, f(x.values[i])))));
  rows.reverse();
  return h('details', { class: 'data-table', open },
    h('summary', {}, 'Data table'),
    h('div', { class: 'table-wrap' },
      h('table', {},
        h('caption', {}, opts.title + ' (newest first)'),
        h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Time'),
          series.map((x) => h('th', { scope: 'col' }, x.label)))),
        h('tbody', {}, rows))));
}

/**
 * Draws a chart into `container` (replacing what was there, keeping its data table open if it
 * was). opts: {id, title, kind: 'pct'|'ms'|'rps', zoom, empty, t: [ms], series: [{label, cls, values}]}
 */
export function lineChart(container, opts) {
  const wasOpen = !!container.querySelector('details[open]');
  const t = opts.t || [];
  const series = opts.series;
  const width = Math.max(280, Math.floor(container.clientWidth || 600));
  const iw = width - M.left - M.right;
  const ih = HEIGHT - M.top - M.bottom;
  const f = FORMAT[opts.kind];
  const ex = extent(series);
  const titleId = opts.id + '-title';
  const descId = opts.id + '-desc';
  const svg = s('svg', {
    class: 'chart-svg', width, height: HEIGHT, viewBox: `0 0 ${width} ${HEIGHT}`, role: 'img',
    'aria-labelledby': titleId + ' ' + descId,
  },
  s('title', { id: titleId }, opts.title),
  s('desc', { id: descId }, describe(opts, series, t)));
  const plot = s('g', { transform: `translate(${M.left},${M.top})` });
  svg.append(plot);
  plot.append(s('rect', { class: 'plot-bg', x: 0, y: 0, width: iw, height: ih }));
  if (!ex || !t.length) {
    plot.append(s('text', { class: 'no-data', x: iw / 2, y: ih / 2, 'text-anchor': 'middle' },
      opts.empty || 'No data yet'));
  } else {
    const [lo, hi] = niceDomain(ex[0], ex[1], opts.kind, opts.zoom);
    const t0 = t.length > 1 ? t[0] : t[0] - 60000;
    const t1 = t[t.length - 1];
    const x = (ts) => ((ts - t0) / Math.max(1, t1 - t0)) * iw;
    const y = (v) => ih - ((Math.min(Math.max(v, lo), hi) - lo) / (hi - lo || 1)) * ih;
    for (let i = 0; i <= 4; i++) {
      const v = lo + ((hi - lo) * i) / 4;
      plot.append(s('line', { class: 'grid', x1: 0, x2: iw, y1: y(v), y2: y(v) }));
      plot.append(s('text', { class: 'tick', x: -6, y: y(v) + 4, 'text-anchor': 'end' }, f(v)));
    }
    plot.append(s('text', { class: 'tick', x: 0, y: ih + 18, 'text-anchor': 'start' }, fmt.time(t0)));
    plot.append(s('text', { class: 'tick', x: iw, y: ih + 18, 'text-anchor': 'end' }, fmt.time(t1)));
    for (const ser of series) {
      let d = '';
      let run = [];
      const flush = () => {
        if (run.length === 1) {
          plot.append(s('circle', { class: 'dot ' + ser.cls, cx: run[0][0], cy: run[0][1], r: 2.5 }));
        }
        run = [];
      };
      ser.values.forEach((v, i) => {
        if (v === null || v === undefined) { flush(); return; }
        const px = x(t[i]).toFixed(1);
        const py = y(v).toFixed(1);
        d += (run.length ? ' L' : ' M') + px + ' ' + py;
        run.push([px, py]);
      });
      flush();
      if (d) plot.append(s('path', { class: 'line ' + ser.cls, d: d.trim() }));
    }
  }
  const legend = h('ul', { class: 'legend' }, series.map((ser) => {
    const vals = ser.values.filter((v) => v !== null && v !== undefined);
    return h('li', {}, h('span', { class: 'swatch ' + ser.cls, 'aria-hidden': 'true' }), ser.label,
      vals.length ? h('span', { class: 'muted' }, ' ' + f(vals[vals.length - 1])) : null);
  }));
  container.replaceChildren(h('figure', { class: 'chart', id: opts.id },
    h('figcaption', {}, opts.title), svg, legend, dataTable(opts, series, t, wasOpen)));
}

/** A split bar: legacy and extracted shares of the last minute's requests, with its text. */
export function splitBar(share) {
  if (share === null || share === undefined) return h('span', { class: 'muted' }, 'no traffic');
  const w = 72;
  const ext = Math.round(share * w);
  const legacyPct = Math.round((1 - share) * 100);
  const extPct = 100 - legacyPct;
  return h('span', { class: 'split' },
    s('svg', { width: w, height: 10, viewBox: `0 0 ${w} 10`, 'aria-hidden': 'true', class: 'split-bar' },
      s('rect', { class: 'fill-legacy', x: 0, y: 0, width: w - ext, height: 10 }),
      s('rect', { class: 'fill-extracted', x: w - ext, y: 0, width: ext, height: 10 })),
    h('span', { class: 'split-text' }, `${legacyPct}% legacy · ${extPct}% extracted`));
}
