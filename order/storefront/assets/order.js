// One order, live: the first paint from GET /orders/{id}, then the order's event stream.
// The timeline is re-read on every change; mails trail the order by a few seconds, so
// they are also polled for a short while after each change.

import { initI18n, t, tOr, formatPrice, formatDate } from './i18n.js';
import {
  getOrder, getTimeline, getMails, cancelOrder, getToken, watchOrder, showError, safeUrl, SETTLED,
} from './api.js';

const $ = (id) => document.getElementById(id);
const MAIL_EVERY_MS = 3000;
const MAIL_WINDOW_MS = 30_000;
const CONFIRM_MS = 5000;
const CANCELLABLE = new Set(['PENDING_PAYMENT', 'COMPLETED']);

const match = location.pathname.match(/^\/shop\/orders\/([^/]+)\/?$/);
const state = {
  id: match ? decodeURIComponent(match[1]) : null,
  token: null,
  order: null,
  watch: null,
  live: 'closed',
  steps: null,
  timelineFailed: false,
  timelineSeq: 0,
  mails: null,
  mailsUnavailable: false,
  mailsInFlight: false,
  mailUntil: 0,
  mailTimer: null,
  confirming: false,
  confirmTimer: null,
  cancelling: false,
  loadFailed: false,
};

function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

function timeEl(iso) {
  const node = el('time', { textContent: formatDate(iso) });
  if (iso) node.dateTime = iso;
  return node;
}

// --- Rendering

function renderOrder() {
  const o = state.order;
  if (!o) return;
  $('order-loading').hidden = true;
  $('order-view').hidden = false;
  $('order-id').textContent = o.id;

  const status = $('order-status');
  status.dataset.status = o.status;
  status.textContent = tOr(`status.${o.status}`, o.status);
  const reason = $('cancel-reason');
  reason.hidden = !o.cancel_reason || !['CANCELLING', 'CANCELLED'].includes(o.status);
  // A cancelled order's reason says more than the generic hint; showing both repeats it.
  $('status-hint').textContent = o.status === 'CANCELLED' && !reason.hidden ? '' : tOr(`hint.${o.status}`, '');
  reason.textContent = o.cancel_reason ? tOr(`reason.${o.cancel_reason}`, o.cancel_reason) : '';
  if (o.cancel_reason) reason.dataset.reason = o.cancel_reason;

  const refunded = $('refunded-amount');
  refunded.hidden = o.refunded_amount == null;
  refunded.replaceChildren();
  if (o.refunded_amount != null) {
    refunded.dataset.amount = String(o.refunded_amount);
    refunded.append(el('span', { textContent: t('order.refunded') }), ' ',
      el('strong', { textContent: formatPrice(o.refunded_amount) }));
  }

  const pay = $('pay-link');
  const payUrl = o.status === 'PENDING_PAYMENT' ? safeUrl(o.payment?.redirect_url) : null;
  pay.hidden = !payUrl;
  if (payUrl) pay.href = payUrl;

  const facts = [
    ['order.email', document.createTextNode(o.customer_email ?? '')],
    ['order.created', o.created_at && timeEl(o.created_at)],
    ['order.deadline', o.status === 'PENDING_PAYMENT' && o.payment_deadline && timeEl(o.payment_deadline)],
    ['order.completed', o.completed_at && timeEl(o.completed_at)],
    ['order.cancelled', o.cancelled_at && timeEl(o.cancelled_at)],
  ].filter(([, value]) => value);
  $('order-facts').replaceChildren(...facts.flatMap(([key, value]) =>
    [el('dt', { textContent: t(key) }), el('dd', {}, value)]));

  $('items').replaceChildren(...(o.items ?? []).map((it) => {
    const tr = el('tr', {},
      el('td', { textContent: it.name }),
      el('td', { className: 'num', textContent: String(it.quantity) }),
      el('td', { className: 'num', textContent: formatPrice(it.unit_price) }),
      el('td', { className: 'num', textContent: formatPrice(it.unit_price * it.quantity) }));
    if (it.sku) tr.dataset.sku = it.sku;
    return tr;
  }));
  $('order-total').textContent = formatPrice(o.total_amount);
  renderCancel();
}

function renderCancel() {
  const btn = $('cancel-order');
  const o = state.order;
  btn.hidden = !o || !CANCELLABLE.has(o.status);
  btn.disabled = state.cancelling;
  if (state.confirming) btn.dataset.confirm = '1';
  else delete btn.dataset.confirm;
  const paid = o?.status === 'COMPLETED';
  btn.textContent = t(state.cancelling ? 'cancel.sending'
    : state.confirming ? 'cancel.confirm' : paid ? 'cancel.paid' : 'cancel.unpaid');
}

function renderTimeline() {
  const note = $('timeline-status');
  const steps = state.steps ?? [];
  $('timeline').replaceChildren(...steps.map((s) => {
    const li = el('li', {},
      timeEl(s.at),
      el('span', { className: 'event', textContent: tOr(`event.${s.event_type}`, s.event_type) }),
      el('span', { className: 'service', textContent: tOr(`service.${s.service}`, s.service ?? '') }),
      el('span', { className: 'outcome', textContent: s.outcome ?? '' }));
    li.dataset.eventType = s.event_type;
    return li;
  }));
  const key = state.timelineFailed ? 'timeline.error' : state.steps && steps.length === 0 ? 'timeline.empty' : null;
  note.hidden = !key;
  note.textContent = key ? t(key) : '';
}

function renderMails() {
  const mails = state.mails ?? [];
  $('mails').replaceChildren(...mails.map((m) => {
    const li = el('li', {},
      el('span', { className: 'mail-kind', textContent: tOr(`mail.${m.type}`, m.type) }),
      el('span', { className: 'mail-status', textContent: tOr(`mailStatus.${m.status}`, m.status) }),
      el('span', { className: 'mail-subject', textContent: m.subject ?? '' }),
      el('span', { className: 'mail-recipient', textContent: m.recipient ?? '' }),
      m.sent_at ? timeEl(m.sent_at) : el('span', { className: 'mail-when', textContent: t('mails.notSent') }));
    li.dataset.type = m.type;
    li.dataset.status = m.status;
    return li;
  }));
  const note = $('mails-status');
  const key = state.mailsUnavailable ? 'mails.unavailable' : state.mails && mails.length === 0 ? 'mails.empty' : null;
  note.hidden = !key;
  note.textContent = key ? t(key) : '';
}

function renderLive() {
  const live = $('live');
  live.hidden = state.live === 'closed';
  live.dataset.state = state.live;
  live.textContent = state.live === 'closed' ? '' : t(state.live === 'open' ? 'live.open' : 'live.reconnecting');
}

function renderAll() {
  renderOrder();
  renderTimeline();
  renderMails();
  renderLive();
}

// --- Data

async function loadTimeline() {
  const seq = ++state.timelineSeq; // a slow older answer must not overwrite a newer one
  try {
    const data = await getTimeline(state.id, state.token);
    if (seq !== state.timelineSeq) return;
    state.steps = Array.isArray(data?.steps) ? data.steps : [];
    state.timelineFailed = false;
  } catch {
    if (seq !== state.timelineSeq) return;
    state.timelineFailed = true;
  }
  renderTimeline();
}

async function loadMails() {
  if (state.mailsInFlight) return;
  state.mailsInFlight = true;
  try {
    const data = await getMails(state.id, state.token);
    state.mails = Array.isArray(data?.mails) ? data.mails : [];
    state.mailsUnavailable = false;
  } catch {
    // 503 when the mail service is down; the side panel says so and the page carries on.
    state.mailsUnavailable = true;
  } finally {
    state.mailsInFlight = false;
  }
  renderMails();
}

function pollMails() {
  state.mailUntil = Date.now() + MAIL_WINDOW_MS;
  loadMails();
  if (state.mailTimer) return;
  state.mailTimer = setInterval(() => {
    if (Date.now() > state.mailUntil) {
      clearInterval(state.mailTimer);
      state.mailTimer = null;
      return;
    }
    loadMails();
  }, MAIL_EVERY_MS);
}

const stamp = (o) => Date.parse(o?.updated_at ?? '') || 0;

// Every order snapshot goes through here: the GET, each live message, the cancel answer.
function apply(order) {
  if (!order?.status) return;
  const prev = state.order;
  // The GET and the stream race at start-up; an older snapshot must not win.
  if (prev && stamp(order) < stamp(prev)) return;
  if (state.loadFailed) showError($('error'), null); // the stream made up for a failed GET
  state.loadFailed = false;
  state.order = order;
  renderOrder();
  const changed = !prev || prev.status !== order.status || prev.updated_at !== order.updated_at
    || JSON.stringify(prev.payment) !== JSON.stringify(order.payment);
  if (changed) {
    loadTimeline();
    pollMails();
  }
}

function watch() {
  if (state.watch) return;
  state.watch = watchOrder(state.id, state.token, {
    onOrder: apply,
    onState: (s) => {
      state.live = s;
      if (s === 'closed') state.watch = null;
      renderLive();
    },
  });
}

// --- Cancel: two clicks instead of confirm(), which a browser test cannot answer.

async function onCancel() {
  if (state.cancelling || !state.order) return;
  if (!state.confirming) {
    state.confirming = true;
    state.confirmTimer = setTimeout(() => { state.confirming = false; renderCancel(); }, CONFIRM_MS);
    renderCancel();
    return;
  }
  clearTimeout(state.confirmTimer);
  state.confirming = false;
  state.cancelling = true;
  renderCancel();
  showError($('error'), null);
  try {
    apply(await cancelOrder(state.id, state.token));
    // The stream closed itself when the order completed; CANCELLING → CANCELLED needs a new one.
    if (!SETTLED.has(state.order.status)) watch();
  } catch (err) {
    showError($('error'), err);
    getOrder(state.id, state.token).then(apply, () => {});
  } finally {
    state.cancelling = false;
    renderCancel();
  }
}

async function start() {
  initI18n(renderAll);
  if (!state.id) {
    $('order-loading').hidden = true;
    showError($('error'), { status: 404, problem: { detail: t('order.badId') } });
    return;
  }
  state.token = getToken(state.id);
  if (!state.token) {
    // Without the token the API would refuse anyway; say why instead of asking it.
    $('order-loading').hidden = true;
    $('no-token').hidden = false;
    return;
  }
  $('cancel-order').addEventListener('click', onCancel);
  try {
    apply(await getOrder(state.id, state.token));
  } catch (err) {
    showError($('error'), err);
    state.loadFailed = true;
    if ([401, 403, 404].includes(err.status)) {
      $('order-loading').hidden = true;
      return;
    }
    // Otherwise (network, 503) the stream's first message can still paint the page.
  }
  if (!SETTLED.has(state.order?.status)) watch();
}

start();
