// A route's page: its config and last minute, the rollout (step, gates, actions), charts over the
// last hour and since its stage began, the fields that differ most, learnt noise, and the sample
// mismatches side by side. Sections are redrawn only when their data changed, so an open sample
// or data table stays open across refreshes.

import { h, fmt, stageBadge, keyed, apiPost } from './lib.js';
import { lineChart, splitBar } from './charts.js';
import { sampleView, sampleKey } from './diff.js';

function tile(label, value, sub, cls) {
  return h('div', { class: 'tile ' + (cls || '') }, h('div', { class: 'tile-label' }, label),
    h('div', { class: 'tile-value' }, value), sub ? h('div', { class: 'sub' }, sub) : null);
}

function headSection(r, now) {
  const m = r.minute || {};
  const since = m.stage_since_ms
    ? (m.stage_since_known ? 'since ' : 'at least since ') + fmt.time(m.stage_since_ms) +
      ' (' + fmt.duration((now - m.stage_since_ms) / 1000) + ')' + (m.stage_since_known ? '' : ', when the gateway started')
    : '';
  const facts = [
    ['Path', h('code', {}, (r.methods ? r.methods.join(',') + ' ' : '') + r.path)],
    ['Extracted upstream', r.to ? h('code', {}, r.to) : '—'],
    ['Canary weight', r.stage === 'canary' ? r.weight + '%' : '—'],
    ['Sticky key', r.sticky || '—'],
    ['Fallback', r.fallback || '—'],
    ['Timeout', fmt.ms(r.timeout_ms)],
  ];
  return [
    h('p', { class: 'crumbs' }, h('a', { href: '#/routes' }, 'Routes'), ' › ', r.name),
    h('h1', { id: 'route-title' }, r.name, ' ', stageBadge(r.stage)),
    h('p', { class: 'muted', id: 'stage-since' }, since ? 'Stage ' + r.stage + ' ' + since + '.' : ''),
    h('dl', { class: 'facts inline' }, facts.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])),
  ];
}

function statsSection(r) {
  const m = r.minute || {};
  const l = m.legacy || {};
  const e = m.extracted || {};
  const sh = r.shadow;
  return h('div', { class: 'tiles' },
    tile('Split, last minute', splitBar(m.extracted_share)),
    tile('Legacy', fmt.rps(l.rps) + ' req/s', `5xx ${fmt.pct(l.error_rate, 2)} · p99 ${fmt.ms(l.p99_ms)}`),
    tile('Extracted', fmt.rps(e.rps) + ' req/s', `5xx ${fmt.pct(e.error_rate, 2)} · p99 ${fmt.ms(e.p99_ms)}`),
    sh ? tile('Shadow match rate', fmt.pct(sh.match_rate),
      `${fmt.count(sh.compared)} compared · ${fmt.count(sh.mismatched)} mismatched` +
      (m.compared ? ` · last minute ${fmt.pct(m.match_rate)}` : ''),
      sh.match_rate === null ? '' : sh.match_rate >= 0.99 ? 'good' : sh.match_rate >= 0.95 ? 'warn' : 'bad')
      : tile('Shadow', 'not shadowed', 'set stage = "shadow" (or on_canary) to compare answers'));
}

// The rollout: where it stands, its last analysis per gate, and the operator's actions (POST with
// the tab's token; a bearer header, never a cookie, so another site cannot forge them).
function rolloutBody(name, ro, message) {
  if (!ro) {
    return [h('p', { class: 'muted' }, 'No [routes.rollout]: this route serves what its stage in routes.toml says.')];
  }
  const check = ro.last_check || {};
  const left = ro.step_remaining_ms !== null && ro.step_remaining_ms !== undefined
    ? ` · ${fmt.duration(ro.step_remaining_ms / 1000)} left in the step` : '';
  return [
    h('p', { id: 'rollout-step', 'data-step': ro.step, 'data-paused': String(ro.paused) },
      h('strong', {}, ro.step), ` (step ${ro.position} of ${ro.steps}, cap ${ro.plan})`,
      ro.next ? ` · next: ${ro.next}` : ' · last step', left),
    ro.paused ? h('p', { class: 'warn', id: 'rollout-paused' }, 'Paused: ' + (ro.paused_reason || '')) : null,
    h('p', { class: 'muted' }, `Last analysis: ${check.verdict || 'not yet'} · ${ro.failures} of ${ro.failure_limit} failed in a row`),
    (check.gates || []).length ? h('ul', { class: 'gates' }, check.gates.map((g) => h('li', {
      class: g.verdict === 'fail' ? 'bad' : g.verdict === 'pass' ? 'good' : 'warn', 'data-gate': g.gate,
    }, `${g.gate}: ${g.verdict} — ${g.detail}`))) : null,
    h('div', { class: 'actions' }, ['Pause', 'Resume', 'Promote', 'Abort'].map((a) => h('button', {
      type: 'button', 'data-action': a.toLowerCase(),
      onclick: async (ev) => {
        const b = ev.currentTarget;
        b.disabled = true;
        try {
          const r = await apiPost(`/admin/rollouts/${encodeURIComponent(name)}/${a.toLowerCase()}`);
          message.textContent = `${a}: done, now ${r.step}${r.paused ? ' (paused)' : ''}.`;
          message.className = 'good';
        } catch (e) {
          message.textContent = `${a} refused: ${e.message}`;
          message.className = 'bad';
        } finally {
          b.disabled = false;
          window.dispatchEvent(new Event('strangler:refresh'));
        }
      },
    }, a))),
  ];
}

function fieldsSection(report) {
  const top = report.top_fields || [];
  const noise = report.noise_fields || [];
  const mismatched = report.mismatched || 0;
  return [
    h('section', { class: 'card', 'aria-labelledby': 'fields-title' },
      h('h2', { id: 'fields-title' }, 'Fields that differ most'),
      top.length ? h('table', { class: 'fields' },
        h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Field'), h('th', { scope: 'col', class: 'num' }, 'Mismatches'),
          h('th', { scope: 'col', class: 'num' }, 'Share'))),
        h('tbody', {}, top.map((f) => h('tr', { 'data-field': f.field },
          h('td', {}, h('code', {}, f.field)), h('td', { class: 'num' }, fmt.count(f.count)),
          h('td', { class: 'num' }, mismatched ? fmt.pct(f.count / mismatched, 0) : '—')))))
        : h('p', { class: 'muted' }, 'No field has differed.')),
    h('section', { class: 'card', 'aria-labelledby': 'noise-title' },
      h('h2', { id: 'noise-title' }, 'Learnt noise'),
      h('p', { class: 'muted' }, 'Fields that differ between two legacy answers to the same request; not counted as mismatches.'),
      noise.length ? h('table', { class: 'fields' },
        h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Field'), h('th', { scope: 'col', class: 'num' }, 'Suppressed'))),
        h('tbody', {}, noise.map((f) => h('tr', {}, h('td', {}, h('code', {}, f.field)),
          h('td', { class: 'num' }, fmt.count(f.suppressed))))))
        : h('p', { class: 'muted' }, 'None learnt (learn_noise off, or nothing noisy yet).')),
  ];
}

const CHARTS = [
  { id: 'chart-match-hour', src: 'hour', title: 'Shadow match rate, last hour', kind: 'pct', zoom: true, match: true },
  { id: 'chart-match-stage', src: 'since_stage', title: 'Shadow match rate, since the stage began', kind: 'pct', zoom: true, match: true },
  { id: 'chart-p99', src: 'hour', title: 'p99 latency per side, last hour', kind: 'ms', field: 'p99_ms' },
  { id: 'chart-errors', src: 'hour', title: '5xx rate per side, last hour', kind: 'pct', field: 'error_rate' },
  { id: 'chart-rps', src: 'hour', title: 'Requests per second per side, last hour', kind: 'rps', field: 'rps' },
];

export function routeView(name) {
  const head = h('div', { class: 'route-head' }, h('p', { class: 'muted' }, 'Loading…'));
  const stats = h('div');
  const charts = h('div', { class: 'charts' });
  const chartBoxes = CHARTS.map((c) => {
    const box = h('div', { class: 'chart-box', 'data-chart': c.id });
    charts.append(box);
    return box;
  });
  const fields = h('div', { class: 'two-col' });
  const samplesList = h('div', { class: 'samples' });
  const samplesNote = h('p', { class: 'muted' });
  let width = 0;
  let latest = [];
  const newer = h('button', { type: 'button', class: 'newer', id: 'newer-samples', hidden: true,
    onclick: () => renderSamples(latest, true) });

  const rolloutInner = h('div');
  const rolloutMessage = h('p', { id: 'rollout-message', role: 'status' });
  const rollout = h('section', { class: 'card', id: 'actions', 'aria-labelledby': 'actions-title' },
    h('h2', { id: 'actions-title' }, 'Rollout'), rolloutInner, rolloutMessage);
  const root = h('section', { class: 'view view-route', 'aria-labelledby': 'route-title', 'data-route': name },
    head, stats, rollout,
    h('h2', { class: 'section-title' }, 'Over time'), charts,
    fields,
    h('section', { class: 'card', 'aria-labelledby': 'samples-title' },
      h('h2', { id: 'samples-title' }, 'Sample mismatches'), samplesNote, newer, samplesList));

  function drawCharts(d) {
    const shadowed = !!d.route.shadow;
    const sinceLabel = d.route.minute && d.route.minute.stage_since_known === false
      ? 'Shadow match rate, since the gateway started' : null;
    CHARTS.forEach((c, i) => {
      const data = d.charts[c.src];
      const series = c.match
        ? [{ label: 'match rate', cls: 's-match', values: data.match_rate }]
        : [{ label: 'legacy', cls: 's-legacy', values: data.legacy[c.field] },
          { label: 'extracted', cls: 's-extracted', values: data.extracted[c.field] }];
      const opts = {
        id: c.id, title: (c.id === 'chart-match-stage' && sinceLabel) || c.title, kind: c.kind, zoom: c.zoom, t: data.t, series,
        empty: c.match && !shadowed ? 'Not shadowed: nothing compared' : 'No data yet (sampled every 2 s)',
      };
      const box = chartBoxes[i];
      const key = JSON.stringify(opts) + '|' + box.clientWidth;
      if (box.dataset.key !== key) {
        box.dataset.key = key;
        lineChart(box, opts);
      }
    });
  }

  // While a sample is open the list holds still (a busy route samples several mismatches a
  // second): newer ones wait behind a button instead of pushing the open one away.
  function renderSamples(samples, openNewest) {
    samplesList.dataset.key = JSON.stringify(samples.map(sampleKey));
    samplesList.replaceChildren(...samples.map((smp, i) => sampleView(smp, openNewest && i === 0)));
    newer.hidden = true;
  }

  function drawSamples(report) {
    latest = ((report && report.samples) || []).slice().reverse().slice(0, 10);
    const shown = samplesList.dataset.key ? JSON.parse(samplesList.dataset.key) : null;
    const anyOpen = !!samplesList.querySelector('details.sample[open]');
    if (shown === null || (!anyOpen && JSON.stringify(shown) !== JSON.stringify(latest.map(sampleKey)))) {
      renderSamples(latest, shown === null);
    } else if (anyOpen) {
      const fresh = latest.filter((smp) => !shown.includes(sampleKey(smp))).length;
      newer.hidden = fresh === 0;
      newer.textContent = `Show ${fresh} newer sample${fresh === 1 ? '' : 's'}`;
    }
    samplesNote.textContent = !report
      ? 'Not shadowed: no comparisons, no samples.'
      : latest.length
        ? `Newest first, ${Math.min(latest.length, 10)} of the ${report.sample_count} kept. Differing paths are marked on both sides; redacted headers stay redacted.`
        : 'No mismatch sampled yet.';
  }

  function redrawOnResize() {
    if (Math.abs(charts.clientWidth - width) > 20) {
      width = charts.clientWidth;
      window.dispatchEvent(new Event('strangler:refresh'));
    }
  }
  window.addEventListener('resize', redrawOnResize);

  return {
    title: name,
    root,
    endpoint: '/ui/api/routes/' + encodeURIComponent(name),
    update(d) {
      width = charts.clientWidth;
      const r = d.route;
      keyed(head, { r: { ...r, minute: undefined, shadow: undefined }, since: r.minute && r.minute.stage_since_ms, min: Math.floor(d.now_ms / 60000) },
        () => headSection(r, d.now_ms));
      keyed(stats, { m: r.minute, s: r.shadow }, () => statsSection(r));
      keyed(rolloutInner, r.rollout, () => rolloutBody(name, r.rollout, rolloutMessage));
      drawCharts(d);
      keyed(fields, d.shadow && { t: d.shadow.top_fields, n: d.shadow.noise_fields, m: d.shadow.mismatched },
        () => (d.shadow ? fieldsSection(d.shadow) : []));
      drawSamples(d.shadow);
    },
    destroy() {
      window.removeEventListener('resize', redrawOnResize);
    },
    failed(e) {
      if (e.status === 404) {
        head.replaceChildren(h('p', { class: 'crumbs' }, h('a', { href: '#/routes' }, 'Routes')),
          h('h1', { id: 'route-title' }, name),
          h('p', { class: 'bad' }, 'No route of this name in the serving routes.toml (removed or renamed?).'));
      }
    },
  };
}
