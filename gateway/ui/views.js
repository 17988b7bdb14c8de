// The list views: Routes (sortable, filterable), Data sync, Config, and History (the audit trail).
// Each view is {title, root, endpoint, update(data)}; app.js polls `endpoint` and calls update.

import { h, fmt, stageBadge, keyed } from './lib.js';
import { splitBar } from './charts.js';

const STAGE_ORDER = { legacy: 0, shadow: 1, canary: 2, extracted: 3 };

function side(r, name) {
  return (r.minute && r.minute[name]) || {};
}

function matchClass(rate) {
  if (rate === null || rate === undefined) return '';
  return rate >= 0.99 ? 'good' : rate >= 0.95 ? 'warn' : 'bad';
}

function matchCell(r) {
  if (!r.shadow) return h('span', { class: 'muted', title: 'not shadowed' }, '—');
  if (!r.shadow.compared) return h('span', { class: 'muted' }, 'no comparisons yet');
  return [h('span', { class: 'rate ' + matchClass(r.shadow.match_rate) }, fmt.pct(r.shadow.match_rate)),
    h('div', { class: 'sub' }, fmt.count(r.shadow.compared) + ' compared')];
}

function sinceText(r, now) {
  const m = r.minute || {};
  if (!m.stage_since_ms) return null;
  const age = fmt.duration((now - m.stage_since_ms) / 1000);
  return m.stage_since_known ? 'for ' + age : 'for ≥ ' + age;
}

/** The routes table's columns: sort key, header, group, cell. */
function columns(now) {
  const num = (group, name, field, f) => ({
    key: group[0] + '_' + name, group, label: name, num: true,
    sort: (r) => side(r, group.toLowerCase())[field],
    cell: (r) => f(side(r, group.toLowerCase())[field]),
  });
  return [
    { key: 'order', label: '#', num: true, sort: (r) => r._i, cell: (r) => String(r._i + 1) },
    {
      key: 'name', label: 'Route', sort: (r) => r.name,
      cell: (r) => [h('a', { href: '#/route/' + encodeURIComponent(r.name), class: 'route-link' }, r.name),
        h('div', { class: 'sub' }, (r.methods ? r.methods.join(',') + ' ' : '') + r.path)],
    },
    {
      key: 'stage', label: 'Stage', sort: (r) => STAGE_ORDER[r.stage],
      cell: (r) => [stageBadge(r.stage), h('div', {
        class: 'sub',
        title: r.minute && r.minute.stage_since_known === false ? 'the stage was set before the gateway started' : null,
      }, sinceText(r, now))],
    },
    {
      key: 'weight', label: 'Weight', num: true, sort: (r) => (r.stage === 'canary' ? r.weight : null),
      cell: (r) => (r.stage === 'canary' ? r.weight + '%' : '—'),
    },
    {
      key: 'split', label: 'Split, last min', sort: (r) => r.minute && r.minute.extracted_share,
      cell: (r) => splitBar(r.minute && r.minute.extracted_share),
    },
    num('Legacy', 'req/s', 'rps', fmt.rps),
    num('Legacy', '5xx', 'error_rate', (x) => fmt.pct(x, 2)),
    num('Legacy', 'p99', 'p99_ms', fmt.ms),
    num('Extracted', 'req/s', 'rps', fmt.rps),
    num('Extracted', '5xx', 'error_rate', (x) => fmt.pct(x, 2)),
    num('Extracted', 'p99', 'p99_ms', fmt.ms),
    { key: 'match', label: 'Shadow match', num: true, sort: (r) => r.shadow && r.shadow.match_rate, cell: matchCell },
    {
      key: 'rollout', label: 'Rollout step', sort: null,
      cell: (r) => (r.rollout
        ? h('span', { 'data-rollout': r.rollout.step, class: r.rollout.paused ? 'warn' : '' },
          `${r.rollout.step} (${r.rollout.position}/${r.rollout.steps})`,
          r.rollout.paused ? h('div', { class: 'sub' }, 'paused') : r.rollout.next ? h('div', { class: 'sub' }, 'next: ' + r.rollout.next) : null)
        : h('span', { class: 'muted', 'data-rollout': 'none', title: 'no [routes.rollout]: the stage is what routes.toml says' }, '—')),
    },
  ];
}

export function routesView() {
  let data = null;
  let sort = { key: 'order', dir: 1 };
  let filter = '';
  const summary = h('p', { class: 'muted', id: 'routes-summary' }, 'Loading…');
  const input = h('input', {
    type: 'search', id: 'route-filter', placeholder: 'name, path, stage or upstream', 'aria-controls': 'routes-table',
    autocomplete: 'off',
  });
  const thead = h('thead');
  const tbody = h('tbody');
  const table = h('table', { id: 'routes-table', class: 'routes' },
    h('caption', { class: 'visually-hidden' },
      'Routes in routes.toml order; traffic figures cover the last minute. Column headers sort.'),
    thead, tbody);
  const empty = h('p', { class: 'muted', id: 'routes-empty', hidden: true });
  input.addEventListener('input', () => {
    filter = input.value.trim().toLowerCase();
    renderBody();
  });

  function header(cols) {
    const sortButton = (c) => {
      if (!c.sort) return c.label;
      const arrow = sort.key === c.key ? (sort.dir > 0 ? ' ▲' : ' ▼') : '';
      return h('button', {
        type: 'button', class: 'sort', 'data-sort': c.key,
        onclick: () => {
          sort = sort.key === c.key ? { key: c.key, dir: -sort.dir } : { key: c.key, dir: 1 };
          renderHead();
          renderBody();
        },
      }, c.label, h('span', { 'aria-hidden': 'true' }, arrow));
    };
    const ariaSort = (c) => (sort.key === c.key ? (sort.dir > 0 ? 'ascending' : 'descending') : null);
    const top = [];
    const sub = [];
    const seen = new Set();
    for (const c of cols) {
      if (!c.group) {
        top.push(h('th', { scope: 'col', rowspan: 2, class: c.num ? 'num' : null, 'aria-sort': ariaSort(c) }, sortButton(c)));
      } else {
        if (!seen.has(c.group)) {
          seen.add(c.group);
          const n = cols.filter((x) => x.group === c.group).length;
          top.push(h('th', { scope: 'colgroup', colspan: n, class: 'group group-' + c.group.toLowerCase() }, c.group));
        }
        sub.push(h('th', { scope: 'col', class: 'num', 'aria-sort': ariaSort(c) }, sortButton(c)));
      }
    }
    return [h('tr', {}, top), h('tr', {}, sub)];
  }

  function renderHead() {
    thead.replaceChildren(...header(columns(data ? data.now_ms : Date.now())));
  }

  function renderBody() {
    if (!data) return;
    const cols = columns(data.now_ms);
    const rows = data.routes.map((r, i) => Object.assign({ _i: i }, r));
    const shown = rows.filter((r) => !filter || [r.name, r.path, r.stage, r.to || '', (r.methods || []).join(',')]
      .some((x) => String(x).toLowerCase().includes(filter)));
    const col = cols.find((c) => c.key === sort.key) || cols[0];
    shown.sort((a, b) => {
      const va = col.sort(a);
      const vb = col.sort(b);
      const na = va === null || va === undefined;
      const nb = vb === null || vb === undefined;
      if (na || nb) return na && nb ? a._i - b._i : na ? 1 : -1; // no value: always last
      const c = typeof va === 'string' ? va.localeCompare(vb) : va - vb;
      return c * sort.dir || a._i - b._i;
    });
    tbody.replaceChildren(...shown.map((r) => h('tr', { 'data-route': r.name, 'data-stage': r.stage },
      cols.map((c) => h('td', {
        class: [c.num ? 'num' : '', 'col-' + c.key].join(' ').trim(),
        'data-label': c.group ? c.group + ' ' + c.label : c.label,
      }, c.cell(r))))));
    empty.hidden = shown.length > 0;
    empty.textContent = data.routes.length ? 'No route matches “' + input.value + '”.' : 'routes.toml has no routes: every request goes to the default upstream.';
  }

  const root = h('section', { class: 'view view-routes', 'aria-labelledby': 'routes-title' },
    h('div', { class: 'view-head' }, h('h1', { id: 'routes-title' }, 'Routes'), summary),
    h('div', { class: 'toolbar' }, h('label', { for: 'route-filter' }, 'Filter'), input),
    h('div', { class: 'table-wrap' }, table), empty);
  renderHead();

  return {
    title: 'Routes',
    root,
    endpoint: '/ui/api/routes',
    update(d) {
      const first = !data;
      data = d;
      summary.replaceChildren(
        `${d.routes.length} route${d.routes.length === 1 ? '' : 's'} · config `,
        h('code', { id: 'config-version' }, d.version),
        ' · loaded ' + fmt.time(d.loaded_at_unix * 1000),
        ...(d.last_reload_failed ? [' · ', h('a', { href: '#/config', class: 'bad' }, 'last reload rejected')] : []));
      if (first) renderHead();
      renderBody();
    },
  };
}

function errorText(e) {
  if (!e) return null;
  const where = [e.table && 'table ' + e.table, e.key && 'key ' + e.key, e.lsn && 'LSN ' + e.lsn,
    e.sqlstate && 'SQLSTATE ' + e.sqlstate].filter(Boolean).join(', ');
  return h('div', { class: 'sync-error' },
    h('strong', {}, e.kind || 'error'), e.retryable ? ' (retried)' : '', ': ', e.message || e.error,
    e.detail ? h('div', { class: 'sub' }, e.detail) : null,
    h('div', { class: 'sub' }, [where, e.at && 'at ' + e.at, e.attempts && e.attempts + ' attempt(s)'].filter(Boolean).join(' · ')));
}

/** Whether rolling back (moving a route back to legacy) loses nothing right now. */
function rollbackVerdict(src) {
  if (!src.status) return ['warn', 'Unknown: the status endpoint has not answered.'];
  const rev = src.status.pipelines && src.status.pipelines.reverse;
  const stale = !src.reachable ? ' (last answer ' + fmt.duration((src.polled_ms - src.status_ms) / 1000) + ' old)' : '';
  if (!rev) return ['warn', 'No reverse sync: rows the extracted service writes do not reach legacy; a rollback leaves them behind.' + stale];
  if (rev.stopped || rev.error) return ['bad', 'Reverse sync stopped: rows written by the extracted service since then are not in legacy. Do not roll back before it runs again.' + stale];
  if (!rev.ready) return ['warn', 'Reverse sync is not streaming (' + rev.state + '): wait before rolling back.' + stale];
  if (rev.lag_seconds > 5) return ['warn', 'Reverse sync is ' + fmt.duration(rev.lag_seconds) + ' behind: wait for it before rolling back.' + stale];
  return ['good', 'Safe to roll back: reverse sync is streaming, ' + fmt.bytes(rev.lag_bytes) + ' behind.' + stale];
}

function sourceCard(src) {
  const pipelines = Object.entries((src.status && src.status.pipelines) || {});
  const [cls, verdict] = rollbackVerdict(src);
  return h('section', { class: 'card sync-source', 'data-source': src.name, 'aria-label': 'cdc-sync ' + src.name },
    h('h2', {}, src.name, ' ',
      h('span', { class: 'pill ' + (src.reachable ? 'good' : 'bad') }, src.reachable ? 'answering' : 'not answering'),
      src.status ? h('span', { class: 'pill' }, src.status.role || '') : null),
    h('p', { class: 'sub' }, h('code', {}, src.url), src.error ? ' · ' + src.error : ''),
    h('p', { class: 'verdict ' + cls }, verdict),
    pipelines.length ? h('div', { class: 'table-wrap' }, h('table', { class: 'sync' },
      h('caption', { class: 'visually-hidden' }, 'Pipelines of ' + src.name),
      h('thead', {}, h('tr', {}, ['Direction', 'State', 'Lag', 'Rows/s', 'Retained WAL', 'Applied', 'Retries', 'Conflicts', 'Last error']
        .map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, pipelines.map(([dir, p]) => h('tr', { 'data-direction': dir },
        h('th', { scope: 'row' }, dir),
        h('td', { 'data-label': 'State' }, h('span', { class: 'pill ' + (p.stopped ? 'bad' : p.ready ? 'good' : 'warn') }, p.state)),
        h('td', { class: 'num', 'data-label': 'Lag' }, fmt.duration(p.lag_seconds), h('div', { class: 'sub' }, fmt.bytes(p.lag_bytes))),
        h('td', { class: 'num', 'data-label': 'Rows/s' }, fmt.rps(p.rows_per_second)),
        h('td', { class: 'num', 'data-label': 'Retained WAL' }, fmt.bytes(p.retained_wal_bytes)),
        h('td', { class: 'num', 'data-label': 'Applied' }, fmt.count(p.rows_applied), h('div', { class: 'sub' }, p.applied_lsn)),
        h('td', { class: 'num', 'data-label': 'Retries' }, fmt.count(p.retries)),
        h('td', { class: 'num', 'data-label': 'Conflicts' }, fmt.count(p.conflicts)),
        h('td', { 'data-label': 'Last error' }, errorText(p.error || p.last_retry) || h('span', { class: 'muted' }, 'none'))))))) : null);
}

export function syncView() {
  const body = h('div', { class: 'sync-sources' }, h('p', { class: 'muted' }, 'Loading…'));
  const root = h('section', { class: 'view', 'aria-labelledby': 'sync-title' },
    h('div', { class: 'view-head' }, h('h1', { id: 'sync-title' }, 'Data sync'),
      h('p', { class: 'muted' }, 'Each cdc-sync pipeline, from its status endpoint, polled by the gateway every 2 s.')),
    body);
  return {
    title: 'Data sync',
    root,
    endpoint: '/ui/api/sync',
    update(d) {
      keyed(body, d.sources, (sources) => (sources.length ? sources.map(sourceCard) : h('div', { class: 'card' },
        h('p', {}, 'No cdc-sync status endpoint is configured.'),
        h('p', {}, 'Start the gateway with ', h('code', {}, '--sync-status NAME=URL'),
          ' once per pipeline, URL being its cdc-sync ', h('code', {}, '/status'),
          ' endpoint, to see their state, lag, throughput, retained WAL and errors here.'))));
    },
  };
}

export function configView() {
  const body = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  const root = h('section', { class: 'view', 'aria-labelledby': 'config-title' },
    h('div', { class: 'view-head' }, h('h1', { id: 'config-title' }, 'Config')), body);
  return {
    title: 'Config',
    root,
    endpoint: '/ui/api/config',
    update(d) {
      const { now_ms, ...stable } = d;
      keyed(body, stable, (c) => [
        h('section', { class: 'card' },
          h('h2', {}, 'Running'),
          h('dl', { class: 'facts' },
            h('dt', {}, 'Version'), h('dd', {}, h('code', { id: 'config-version' }, c.version)),
            h('dt', {}, 'Loaded'), h('dd', {}, fmt.dateTime(c.loaded_at_unix * 1000)),
            h('dt', {}, 'File'), h('dd', {}, h('code', {}, c.path)),
            h('dt', {}, 'Listening'), h('dd', {}, h('code', {}, c.listen), ' (admin ', h('code', {}, c.admin_listen), ')'),
            h('dt', {}, 'Routes'), h('dd', {}, String(c.routes)))),
        h('section', { class: 'card', id: 'last-rejected' },
          h('h2', {}, 'Last rejected reload'),
          c.last_error ? [
            h('p', { class: 'bad' }, 'Rejected at ' + fmt.dateTime(c.last_error.at_unix * 1000) + ' (trigger: ' +
              c.last_error.trigger + '); version ', h('code', {}, c.version), ' still serves.'),
            h('ul', { class: 'issues' }, (c.last_error.issues || []).map((i) => h('li', {},
              h('code', { class: 'place' }, `${i.file}:${i.line}:${i.column}`), ' ', i.message,
              i.hint ? h('span', { class: 'muted' }, ' (hint: ' + i.hint + ')') : null))),
          ] : h('p', { class: 'good' }, 'None since the last good reload.')),
        h('section', { class: 'card' },
          h('h2', {}, 'Upstreams'),
          h('div', { class: 'table-wrap' }, h('table', {},
            h('thead', {}, h('tr', {}, ['Upstream', 'Balance', 'Endpoints'].map((t) => h('th', { scope: 'col' }, t)))),
            h('tbody', {}, (c.upstreams || []).map((u) => h('tr', {},
              h('th', { scope: 'row' }, u.name),
              h('td', { 'data-label': 'Balance' }, u.balance),
              h('td', { 'data-label': 'Endpoints' }, u.endpoints.map((e) => h('div', {},
                h('code', {}, e.host || e.addr), ' ',
                h('span', { class: 'pill ' + (e.ejected ? 'bad' : e.healthy ? 'good' : 'bad') },
                  e.ejected ? 'ejected' : e.healthy ? 'healthy' : 'failing health checks'),
                e.inflight ? h('span', { class: 'muted' }, ` ${e.inflight} in flight`) : null))))))))),
      ]);
    },
  };
}

export function historyView() {
  // the rollout controller's audit trail: every change of a route's stage or weight
  const body = h('div', { class: 'card' }, h('p', { class: 'muted' }, 'Loading…'));
  const root = h('section', { class: 'view', 'aria-labelledby': 'history-title', 'data-view-name': 'history' },
    h('div', { class: 'view-head' }, h('h1', { id: 'history-title' }, 'History')),
    h('p', { class: 'muted' }, 'Every change of a route’s effective stage or weight: who, why, and the gate values behind it. Newest first.'),
    body);
  return {
    title: 'History',
    root,
    endpoint: '/admin/history?limit=200',
    update(d) {
      const events = (d.events || []).slice().reverse();
      keyed(body, events.length && events[0].at_unix_ms + ':' + events.length, () => (events.length
        ? h('div', { class: 'table-wrap' }, h('table', { id: 'history-table' },
          h('caption', { class: 'sr-only' }, 'Rollout history, newest first'),
          h('thead', {}, h('tr', {}, ['When', 'Route', 'What', 'From → to', 'Who', 'Why'].map((t) => h('th', { scope: 'col' }, t)))),
          h('tbody', {}, events.map((e) => h('tr', { 'data-kind': e.kind, 'data-route': e.route },
            h('td', { 'data-label': 'When' }, new Date(e.at_unix_ms).toLocaleString()),
            h('th', { scope: 'row', 'data-label': 'Route' }, h('a', { href: '#/route/' + encodeURIComponent(e.route) }, e.route)),
            h('td', { 'data-label': 'What', class: e.kind === 'rollback' ? 'bad' : '' }, e.kind),
            h('td', { 'data-label': 'From → to' }, `${e.from} → ${e.to}`),
            h('td', { 'data-label': 'Who' }, e.who),
            h('td', { 'data-label': 'Why' }, e.why,
              (e.gates || []).length ? h('details', {}, h('summary', {}, 'gate values'),
                h('ul', {}, e.gates.map((g) => h('li', { class: g.verdict === 'fail' ? 'bad' : g.verdict === 'pass' ? 'good' : 'warn' },
                  `${g.gate}: ${g.verdict} — ${g.detail}`)))) : null))))))
        : h('p', { class: 'muted' }, 'No change recorded yet (routes with a [routes.rollout] record every step here, and reloads record what they changed).')));
    },
  };
}
