// The catalog, the cart and the checkout. Prices here are for display; the server prices
// the order. After a 202 the page follows the order's live stream until the payment page
// is ready, then hands the shopper over to it.

import { initI18n, t, lang, formatPrice } from './i18n.js';
import {
  getProducts, placeOrder, rememberOrder, listOrders, watchOrder, showError, safeUrl,
} from './api.js';

const $ = (id) => document.getElementById(id);
const MAX_QTY = 99;
const SLOW_MS = 60_000;

const state = {
  products: [],
  qty: new Map(), // sku -> quantity, survives re-rendering on a language switch
  busy: false,
  attempt: null, // { fingerprint, key }: one Idempotency-Key per distinct request body
  watch: null,
  slowTimer: null,
  status: null, // { key, vars, orderId } so a language switch can re-render it
};

// crypto.randomUUID exists only in secure contexts; a shop reached over plain http on a
// LAN address still needs a key, and getRandomValues is available everywhere.
function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

const orderPage = (id) => `/shop/orders/${encodeURIComponent(id)}`;
const productName = (p) => p.name?.[lang()] ?? p.name?.ko ?? p.name?.en ?? p.sku;

function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

// --- Your orders

function renderMyOrders() {
  const ids = listOrders();
  const nav = $('my-orders');
  nav.hidden = ids.length === 0;
  $('my-orders-list').replaceChildren(...ids.map((id) => {
    const a = el('a', { href: orderPage(id), textContent: t('nav.order', { id: id.slice(0, 8) }) });
    a.dataset.orderId = id;
    return el('li', {}, a);
  }));
}

// --- Catalog

function clampQty(raw) {
  const n = Math.trunc(Number(raw));
  return Number.isFinite(n) ? Math.min(MAX_QTY, Math.max(0, n)) : 0;
}

function setQty(sku, n, input) {
  state.qty.set(sku, clampQty(n));
  if (input) input.value = String(state.qty.get(sku));
  renderCart();
}

function productCard(p, index) {
  const name = productName(p);
  const li = el('li', { className: `product card${p.in_stock ? '' : ' is-out'}` });
  li.dataset.testid = `product-${p.sku}`;
  li.dataset.sku = p.sku;

  const art = el('div', { className: `product-art art-${index % 4}`, textContent: name.slice(0, 1) });
  art.setAttribute('aria-hidden', 'true');
  const title = el('h3', { className: 'product-name', textContent: name });
  const price = el('p', { className: 'product-price', textContent: formatPrice(p.price) });
  li.append(art, title, price);
  if (!p.in_stock) li.append(el('span', { className: 'badge', textContent: t('product.outOfStock') }));

  const input = el('input', {
    id: `qty-${p.sku}`, type: 'number', min: '0', max: String(MAX_QTY), step: '1',
    inputMode: 'numeric', value: String(state.qty.get(p.sku) ?? 0), disabled: !p.in_stock,
  });
  input.dataset.testid = `qty-${p.sku}`;
  // 'input' keeps the cart in step while typing; 'change' then writes back the clamped value.
  input.addEventListener('input', () => { state.qty.set(p.sku, clampQty(input.value)); renderCart(); });
  input.addEventListener('change', () => setQty(p.sku, input.value, input));

  const step = (delta, label, text) => {
    const b = el('button', { type: 'button', className: 'step', textContent: text, disabled: !p.in_stock });
    b.setAttribute('aria-label', t(label, { name }));
    b.addEventListener('click', () => setQty(p.sku, (state.qty.get(p.sku) ?? 0) + delta, input));
    return b;
  };
  const label = el('label', { htmlFor: input.id, className: 'qty-label', textContent: t('product.qty') });
  li.append(el('div', { className: 'qty' }, label,
    el('div', { className: 'stepper' }, step(-1, 'product.less', '−'), input, step(1, 'product.more', '+'))));
  return li;
}

function renderCatalog() {
  $('catalog').replaceChildren(...state.products.map(productCard));
}

async function loadCatalog() {
  const status = $('catalog-status');
  try {
    const products = await getProducts();
    state.products = Array.isArray(products) ? products : [];
    status.dataset.i18n = 'catalog.empty';
    status.textContent = t('catalog.empty');
    status.hidden = state.products.length > 0;
    renderCatalog();
    renderCart();
  } catch (err) {
    status.dataset.i18n = 'catalog.error';
    status.textContent = t('catalog.error');
    showError($('error'), err);
  }
}

// --- Cart and checkout

function cartItems() {
  // Only products still in stock: a quantity typed before a re-render must not sneak in.
  return state.products
    .filter((p) => p.in_stock && (state.qty.get(p.sku) ?? 0) > 0)
    .map((p) => ({ sku: p.sku, quantity: state.qty.get(p.sku) }));
}

function renderCart() {
  const items = cartItems();
  const bySku = new Map(state.products.map((p) => [p.sku, p]));
  let total = 0;
  $('cart-lines').replaceChildren(...items.map(({ sku, quantity }) => {
    const p = bySku.get(sku);
    total += p.price * quantity;
    const li = el('li', {},
      el('span', { textContent: t('cart.line', { name: productName(p), qty: quantity }) }),
      el('span', { className: 'amount', textContent: formatPrice(p.price * quantity) }));
    li.dataset.sku = sku;
    return li;
  }));
  $('cart-empty').hidden = items.length > 0;
  $('cart-total').textContent = formatPrice(total);
  renderButton();
}

function renderButton() {
  const btn = $('place-order');
  btn.disabled = state.busy || cartItems().length === 0;
  btn.textContent = t(state.busy ? 'checkout.placing' : 'checkout.place');
  btn.setAttribute('aria-busy', String(state.busy));
}

function setStatus(key, vars = {}, orderId = null) {
  state.status = key ? { key, vars, orderId } : null;
  renderStatus();
}

function renderStatus() {
  const box = $('checkout-status');
  const link = $('checkout-order-link');
  const s = state.status;
  box.classList.toggle('is-active', Boolean(s));
  $('checkout-status-text').textContent = s ? t(s.key, s.vars) : '';
  link.hidden = !s?.orderId;
  if (s?.orderId) {
    link.href = orderPage(s.orderId);
    link.textContent = t('checkout.orderLink');
  }
}

function setBusy(busy) {
  state.busy = busy;
  // readOnly, not disabled: a disabled field would drop out of the form and lose focus.
  $('email').readOnly = busy;
  renderButton();
}

function stopWatching() {
  state.watch?.close();
  state.watch = null;
  clearTimeout(state.slowTimer);
}

function go(url) {
  stopWatching();
  setStatus('checkout.redirecting');
  location.assign(url);
}

// Called with the 202 body and with every live message until the shopper leaves.
function follow(order) {
  if (order.status === 'PENDING_PAYMENT') {
    const url = safeUrl(order.payment?.redirect_url);
    if (url) go(url);
    return;
  }
  // Cancelled (e.g. payment_unavailable) or anything else: the order page explains it.
  go(orderPage(order.id));
}

function placed(order) {
  rememberOrder(order.id, order.access_token);
  renderMyOrders();
  setStatus('checkout.preparing');
  state.slowTimer = setTimeout(() => setStatus('checkout.slow', {}, order.id), SLOW_MS);
  state.watch = watchOrder(order.id, order.access_token, { onOrder: follow });
  follow(order);
}

async function submit(ev) {
  ev.preventDefault();
  if (state.busy) return;
  const items = cartItems();
  if (items.length === 0) return;
  const email = $('email').value.trim();
  const body = { customer_id: email, customer_email: email, locale: lang(), items };
  // Same body, same key: a double click or a retry after a lost answer is one order.
  const fingerprint = JSON.stringify(body);
  if (state.attempt?.fingerprint !== fingerprint) state.attempt = { fingerprint, key: newKey() };

  showError($('error'), null);
  setStatus(null);
  setBusy(true);
  try {
    const order = await placeOrder(body, state.attempt.key, {
      onRetry: (n, max) => setStatus('checkout.retrying', { n, max }),
    });
    state.attempt = null; // the next order is a new one
    placed(order);
  } catch (err) {
    // 422: this key is bound to another body on the server; a fresh key lets a retry through.
    if (err.status === 422) state.attempt = null;
    setBusy(false);
    setStatus(null);
    showError($('error'), err);
  }
}

function rerender() {
  renderMyOrders();
  renderCatalog();
  renderCart();
  renderStatus();
}

// Back from the payment page, the browser may restore this page from its cache with the
// form still busy and the stream closed; start over from a clean checkout.
window.addEventListener('pageshow', (ev) => {
  if (!ev.persisted) return;
  stopWatching();
  setStatus(null);
  setBusy(false);
  renderMyOrders();
});

initI18n(rerender);
$('checkout-form').addEventListener('submit', submit);
renderMyOrders();
renderCart();
loadCatalog();
