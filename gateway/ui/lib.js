// Shared by every view: building DOM nodes (text always goes in as text, never as HTML: route
// names, URIs and bodies come from traffic), formatting numbers, and the token-carrying fetch.

const SVGNS = 'http://www.w3.org/2000/svg';
export const TOKEN_KEY = 'strangler.adminToken';

function build(el, attrs, children) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

/** An HTML element: h('a', {href: '#'}, 'text', child, ...). */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** An SVG element. */
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVGNS, tag), attrs, children);
}

/** A request the admin API refused for want of a (valid) token. */
export class AuthError extends Error {}

/** GET a dashboard endpoint with the tab's token; JSON back, or an Error with .status. */
export async function api(path) {
  const headers = { accept: 'application/json' };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.authorization = 'Bearer ' + token;
  const r = await fetch(path, { headers, cache: 'no-store', credentials: 'omit' });
  if (r.status === 401) throw new AuthError('the admin token was refused');
  if (!r.ok) {
    let msg = 'HTTP ' + r.status;
    try {
      const j = await r.json();
      if (j && j.error && j.error.message) msg = j.error.message;
    } catch (_) { /* not JSON */ }
    const e = new Error(msg);
    e.status = r.status;
    throw e;
  }
  return r.json();
}

/** POST to an admin endpoint with the tab's token (rollout actions); JSON back, or an Error. */
export async function apiPost(path) {
  const headers = { accept: 'application/json', 'x-operator': 'dashboard' };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.authorization = 'Bearer ' + token;
  const r = await fetch(path, { method: 'POST', headers, cache: 'no-store', credentials: 'omit' });
  if (r.status === 401) throw new AuthError('the admin token was refused');
  let j = null;
  try {
    j = await r.json();
  } catch (_) { /* not JSON */ }
  if (!r.ok) {
    const e = new Error((j && j.error && j.error.message) || 'HTTP ' + r.status);
    e.status = r.status;
    throw e;
  }
  return j;
}

const none = '—';

export const fmt = {
  /** 0.9731 -> "97.3%"; never rounds a rate below 1 up to 100%. */
  pct(x, digits = 1) {
    if (x === null || x === undefined) return none;
    if (x >= 1) return '100%';
    const v = Math.min(x * 100, 100 - Math.pow(10, -digits));
    return v.toFixed(digits) + '%';
  },
  rps(x) {
    if (x === null || x === undefined) return none;
    if (x === 0) return '0';
    if (x < 10) return x.toFixed(2);
    if (x < 100) return x.toFixed(1);
    return Math.round(x).toLocaleString('en');
  },
  ms(x) {
    if (x === null || x === undefined) return none;
    if (x >= 1000) return (x / 1000).toFixed(2) + ' s';
    if (x >= 100) return Math.round(x) + ' ms';
    if (x >= 1) return x.toFixed(1) + ' ms';
    return x.toFixed(2) + ' ms';
  },
  bytes(n) {
    if (n === null || n === undefined || n < 0) return none;
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? String(n) : n.toFixed(1)) + ' ' + units[i];
  },
  count(n) {
    return n === null || n === undefined ? none : Number(n).toLocaleString('en');
  },
  /** Seconds as "45 s", "12 min", "3 h 5 min", "2 d 4 h". */
  duration(sec) {
    if (sec === null || sec === undefined) return none;
    sec = Math.max(0, Math.round(sec));
    if (sec < 60) return sec + ' s';
    const m = Math.floor(sec / 60);
    if (m < 60) return m + ' min';
    const hr = Math.floor(m / 60);
    if (hr < 48) return hr + ' h' + (m % 60 ? ' ' + (m % 60) + ' min' : '');
    return Math.floor(hr / 24) + ' d' + (hr % 24 ? ' ' + (hr % 24) + ' h' : '');
  },
  time(ms) {
    return new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  },
  dateTime(ms) {
    return new Date(ms).toLocaleString([], { dateStyle: 'medium', timeStyle: 'medium' });
  },
};

/** The stage as a badge (the word is always there: colour is never the only cue). */
export function stageBadge(stage) {
  return h('span', { class: 'stage stage-' + stage }, stage);
}

/** Replaces `el`'s children only when `data` changed since the last call with the same key. */
export function keyed(el, data, render) {
  const key = JSON.stringify(data);
  if (el.dataset.key === key) return false;
  el.dataset.key = key;
  el.replaceChildren(...[render(data)].flat().filter((c) => c !== null && c !== undefined));
  return true;
}
