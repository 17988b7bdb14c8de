// The dashboard's shell: asks for the admin token when the gateway wants one (kept only in this
// tab's sessionStorage), picks the view from the URL's #fragment, and polls that view's JSON
// every 2 s while the tab is visible, updating the page in place (no reload).

import { h, api, fmt, AuthError, TOKEN_KEY } from './lib.js';
import { routesView, syncView, configView, historyView } from './views.js';
import { routeView } from './route.js';

const POLL_MS = 2000;
const main = document.getElementById('main');
const live = document.getElementById('live');
const forget = document.getElementById('forget-token');

/** The view on screen: {endpoint, update(data), ...} plus its poll timer. */
let current = null;
/** Bumped whenever the view changes, so a late answer for the old view is dropped. */
let generation = 0;
let timer = null;

function setLive(state, text) {
  live.dataset.state = state;
  live.textContent = text;
}

function parseHash() {
  const parts = (location.hash || '#/routes').replace(/^#\/?/, '').split('/');
  const name = parts[0] || 'routes';
  const param = parts.length > 1 ? decodeURIComponent(parts.slice(1).join('/')) : null;
  return { name, param };
}

function makeView(name, param) {
  switch (name) {
    case 'route': return param ? routeView(param) : routesView();
    case 'sync': return syncView();
    case 'config': return configView();
    case 'history': return historyView();
    default: return routesView();
  }
}

function show() {
  generation++;
  clearTimeout(timer);
  const { name, param } = parseHash();
  if (current && current.destroy) current.destroy();
  current = makeView(name, param);
  const nav = name === 'route' ? 'routes' : name;
  for (const a of document.querySelectorAll('nav a[data-view]')) {
    if (a.dataset.view === nav) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  document.title = current.title + ' · strangler';
  main.replaceChildren(current.root);
  poll(generation);
}

async function poll(gen) {
  if (gen !== generation) return;
  const view = current;
  if (view.endpoint) {
    try {
      const data = await api(view.endpoint);
      if (gen !== generation) return;
      view.update(data);
      setLive('ok', 'Live · updated ' + fmt.time(Date.now()));
    } catch (e) {
      if (gen !== generation) return;
      if (e instanceof AuthError) {
        sessionStorage.removeItem(TOKEN_KEY);
        askToken('The gateway refused the token (was it changed?). Enter it again.');
        return;
      }
      if (view.failed) view.failed(e);
      setLive('error', 'No answer from the gateway (' + e.message + '); retrying');
    }
  } else {
    setLive('ok', 'Live');
  }
  if (gen === generation && view.endpoint && !document.hidden) {
    timer = setTimeout(() => poll(gen), POLL_MS);
  }
}

/** Whether the admin API wants a token and, if so, whether the stored one is good. */
async function session() {
  return api('/ui/api/session');
}

function askToken(message) {
  generation++;
  clearTimeout(timer);
  forget.hidden = true;
  setLive('idle', 'Waiting for the admin token');
  const input = h('input', {
    id: 'token', name: 'token', type: 'password', autocomplete: 'off', spellcheck: 'false', required: true,
    'aria-describedby': 'token-help',
  });
  const error = h('p', { class: 'error', role: 'alert', id: 'token-error' }, message || '');
  error.hidden = !message;
  const form = h('form', { id: 'token-form', method: 'post', class: 'token-form' },
    h('label', { for: 'token' }, 'Admin token'),
    h('div', { class: 'row' }, input, h('button', { type: 'submit' }, 'Open the dashboard')));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const value = input.value.trim();
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    try {
      const s = await session();
      if (s.token_required && !s.token_valid) {
        sessionStorage.removeItem(TOKEN_KEY);
        error.textContent = 'That token was refused.';
        error.hidden = false;
        input.select();
        return;
      }
      started();
    } catch (err) {
      error.textContent = 'No answer from the gateway: ' + err.message;
      error.hidden = false;
    }
  });
  main.replaceChildren(h('section', { class: 'card token-card', 'aria-labelledby': 'token-title' },
    h('h1', { id: 'token-title' }, 'Admin token'),
    h('p', { id: 'token-help' },
      'The dashboard reads the gateway\u2019s admin API, which needs its bearer token (',
      h('code', {}, 'admin_token'), ' or ', h('code', {}, 'admin_token_env'), ' in routes.toml). ',
      'It is kept only in this tab\u2019s session storage and sent only to this gateway.'),
    error, form));
  input.focus();
}

let listening = false;
function started() {
  forget.hidden = !sessionStorage.getItem(TOKEN_KEY);
  if (!listening) {
    listening = true;
    window.addEventListener('hashchange', show);
    document.addEventListener('visibilitychange', () => {
      if (!document.hidden && current && !document.getElementById('token-form')) {
        clearTimeout(timer);
        poll(generation);
      }
    });
  }
  show();
}

forget.addEventListener('click', () => {
  sessionStorage.removeItem(TOKEN_KEY);
  askToken(null);
});

async function boot() {
  try {
    const s = await session();
    if (s.token_required && !s.token_valid) {
      const had = sessionStorage.getItem(TOKEN_KEY);
      sessionStorage.removeItem(TOKEN_KEY);
      askToken(had ? 'The stored token was refused.' : null);
      return;
    }
    started();
  } catch (e) {
    setLive('error', 'No answer from the gateway (' + e.message + '); retrying');
    setTimeout(boot, POLL_MS);
  }
}

// a view's "Retry" links and the like ask for an immediate refresh
window.addEventListener('strangler:refresh', () => {
  clearTimeout(timer);
  poll(generation);
});

boot();
