// The shop API, the order tokens kept in localStorage, the live order stream and the
// one error box. Both pages share these so they agree on keys and error handling.

import { t, has } from './i18n.js';

const ORDERS_KEY = 'saga-shop:orders';
const tokenKey = (id) => `saga-shop:order:${id}`;
const MAX_ORDERS = 20;

export const SETTLED = new Set(['COMPLETED', 'CANCELLED']);

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status; // 0: the request never got an answer
    this.problem = problem || null;
  }
}

async function request(method, path, { token, body, headers = {} } = {}) {
  const init = { method, headers: { Accept: 'application/json', ...headers }, cache: 'no-store' };
  if (token) init.headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch {
    throw new ApiError(0, null);
  }
  const text = await res.text().catch(() => '');
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { /* a proxy's HTML error page */ }
  if (!res.ok) throw new ApiError(res.status, data && typeof data === 'object' ? data : null);
  return data;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export const getProducts = () => request('GET', '/products');

// Network failures are retried with the same Idempotency-Key, so an order whose response
// was lost is answered again rather than placed twice. HTTP errors are not retried here:
// the shopper decides, and a second click reuses the key as well.
export async function placeOrder(body, idempotencyKey, { retries = 3, onRetry } = {}) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await request('POST', '/orders', { body, headers: { 'Idempotency-Key': idempotencyKey } });
    } catch (err) {
      if (err.status !== 0 || attempt >= retries) throw err;
      onRetry?.(attempt + 1, retries);
      await sleep(400 * 2 ** attempt);
    }
  }
}

const orderPath = (id) => `/orders/${encodeURIComponent(id)}`;
export const getOrder = (id, token) => request('GET', orderPath(id), { token });
export const getTimeline = (id, token) => request('GET', `${orderPath(id)}/timeline`, { token });
export const getMails = (id, token) => request('GET', `${orderPath(id)}/mails`, { token });
export const cancelOrder = (id, token) => request('POST', `${orderPath(id)}/cancel`, { token });

// --- Tokens: the server shows an order's token only once, in the 202 of POST /orders.

export function listOrders() {
  try {
    const ids = JSON.parse(localStorage.getItem(ORDERS_KEY) || '[]');
    return Array.isArray(ids) ? ids.filter((id) => typeof id === 'string') : [];
  } catch {
    return [];
  }
}

export function getToken(id) {
  try { return localStorage.getItem(tokenKey(id)); } catch { return null; }
}

export function rememberOrder(id, token) {
  try {
    localStorage.setItem(tokenKey(id), token);
    const ids = [id, ...listOrders().filter((x) => x !== id)];
    // Tokens of orders that fall off the list could no longer be reached from the page.
    for (const old of ids.slice(MAX_ORDERS)) localStorage.removeItem(tokenKey(old));
    localStorage.setItem(ORDERS_KEY, JSON.stringify(ids.slice(0, MAX_ORDERS)));
  } catch { /* storage full or disabled: the order page will say it cannot show it */ }
}

// --- Live order changes.

// Wraps EventSource: closes it on a settled order (the server ends the stream then and
// EventSource would otherwise reconnect forever), and reports open/reconnecting/closed.
export function watchOrder(id, token, { onOrder, onState }) {
  const url = `${orderPath(id)}/events?token=${encodeURIComponent(token)}`;
  let es = null;
  let retryTimer = null;
  let stopped = false;

  const stop = () => {
    stopped = true;
    clearTimeout(retryTimer);
    es?.close();
    onState?.('closed');
  };

  const open = () => {
    es = new EventSource(url);
    es.addEventListener('open', () => onState?.('open'));
    es.addEventListener('order', (ev) => {
      let order;
      try { order = JSON.parse(ev.data); } catch { return; }
      if (SETTLED.has(order.status)) stop();
      onOrder(order);
    });
    es.addEventListener('error', () => {
      if (stopped) return;
      onState?.('reconnecting');
      // CONNECTING: EventSource retries by itself. CLOSED: the server refused the stream
      // (an HTTP error), which EventSource never retries, so try again a little later.
      if (es.readyState === EventSource.CLOSED) retryTimer = setTimeout(() => !stopped && open(), 5000);
    });
  };

  open();
  return { close: stop };
}

// --- The #error box: the problem's detail plus each invalid parameter.

export function showError(box, err) {
  box.replaceChildren();
  if (!err) {
    box.hidden = true;
    return;
  }
  const status = err.status ?? 0;
  const lead = document.createElement('p');
  lead.className = 'error-lead';
  lead.textContent = status === 0 ? t('error.network')
    : has(`error.${status}`) ? t(`error.${status}`) : t('error.generic', { status });
  box.append(lead);
  const p = err.problem;
  if (p?.detail || p?.title) {
    const detail = document.createElement('p');
    detail.className = 'error-detail';
    detail.textContent = p.detail || p.title;
    box.append(detail);
  }
  if (Array.isArray(p?.invalid_params) && p.invalid_params.length) {
    const ul = document.createElement('ul');
    for (const param of p.invalid_params) {
      const li = document.createElement('li');
      li.textContent = `${param.name}: ${param.reason}`;
      ul.append(li);
    }
    box.append(ul);
  }
  box.hidden = false;
}

// Only http(s) targets: a redirect_url is data from the network, never a javascript: URL.
export function safeUrl(raw) {
  if (typeof raw !== 'string' || raw === '') return null;
  try {
    const u = new URL(raw, location.href);
    return u.protocol === 'https:' || u.protocol === 'http:' ? u.href : null;
  } catch {
    return null;
  }
}
