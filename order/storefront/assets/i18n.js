// Dictionaries and locale helpers. Every visible string of both pages lives here, so a
// string missing from one language shows up as its key instead of silently in the other.

const STORE_KEY = 'saga-shop:lang';
export const LANGS = ['ko', 'en'];

const dict = {
  ko: {
    'shop.name': '사가 커피',
    'shop.tagline': '오늘 볶은 원두, 내일 도착',
    'title.shop': '사가 커피 — 원두와 도구',
    'title.order': '주문 상세 — 사가 커피',
    'lang.group': '언어',
    'lang.ko': '한국어',
    'lang.en': 'English',
    'skip': '본문으로 건너뛰기',
    'nav.orders': '내 주문',
    'nav.order': '주문 {id}',
    'catalog.heading': '상품',
    'catalog.loading': '상품을 불러오는 중…',
    'catalog.empty': '지금은 판매 중인 상품이 없습니다.',
    'catalog.error': '상품 목록을 불러오지 못했습니다.',
    'product.outOfStock': '품절',
    'product.qty': '수량',
    'product.qtyFor': '{name} 수량',
    'product.less': '{name} 하나 빼기',
    'product.more': '{name} 하나 더하기',
    'cart.heading': '장바구니',
    'cart.empty': '장바구니가 비어 있습니다. 원하는 상품의 수량을 골라 주세요.',
    'cart.line': '{name} × {qty}',
    'cart.total': '합계',
    'cart.note': '최종 금액은 주문할 때 확정됩니다.',
    'checkout.email': '이메일',
    'checkout.emailHint': '주문 확인과 결제 안내 메일을 이 주소로 보내 드립니다.',
    'checkout.place': '주문하고 결제하기',
    'checkout.placing': '주문하는 중…',
    'checkout.retrying': '연결이 불안정해 다시 시도하는 중… ({n}/{max})',
    'checkout.preparing': '결제를 준비하고 있습니다…',
    'checkout.redirecting': '결제 페이지로 이동합니다…',
    'checkout.slow': '결제 준비가 평소보다 오래 걸리고 있습니다.',
    'checkout.orderLink': '주문 페이지에서 확인하기',
    'error.network': '서버에 연결할 수 없습니다. 네트워크를 확인하고 다시 시도해 주세요.',
    'error.400': '주문 내용을 확인해 주세요.',
    'error.401': '이 주문을 볼 권한이 없습니다.',
    'error.404': '주문을 찾을 수 없습니다.',
    'error.409': '지금 상태에서는 할 수 없는 요청입니다.',
    'error.422': '주문 내용이 바뀌었습니다. 다시 한 번 주문해 주세요.',
    'error.503': '잠시 주문을 받을 수 없습니다. 조금 뒤에 다시 시도해 주세요.',
    'error.generic': '문제가 생겼습니다 (HTTP {status}).',
    'order.heading': '주문',
    'order.id': '주문 번호',
    'order.loading': '주문을 불러오는 중…',
    'order.noToken': '이 주문은 주문한 브라우저에서만 볼 수 있습니다.',
    'order.badId': '주소에 주문 번호가 없습니다.',
    'order.email': '받는 메일',
    'order.created': '주문 시각',
    'order.deadline': '결제 기한',
    'order.completed': '완료 시각',
    'order.cancelled': '취소 시각',
    'order.refunded': '환불 금액',
    'order.pay': '결제하러 가기',
    'order.items': '주문 상품',
    'order.col.item': '상품',
    'order.col.qty': '수량',
    'order.col.unit': '단가',
    'order.col.amount': '금액',
    'order.total': '합계',
    'status.PENDING_PAYMENT': '결제 대기 중',
    'status.CLOSING_PAYMENT': '결제 확인 중',
    'status.COMPLETED': '주문 완료',
    'status.CANCELLING': '취소 중(환불 진행)',
    'status.CANCELLED': '취소됨',
    'hint.PENDING_PAYMENT': '결제를 마치면 주문이 확정됩니다.',
    'hint.CLOSING_PAYMENT': '결제 승인을 확인하고 있습니다. 잠시만 기다려 주세요.',
    'hint.COMPLETED': '주문이 완료되었습니다. 곧 원두를 볶아 보내 드릴게요.',
    'hint.CANCELLING': '주문을 취소하고 결제 금액을 환불하고 있습니다.',
    'hint.CANCELLED': '주문이 취소되었습니다.',
    'reason.payment_declined': '결제가 거절되었습니다.',
    'reason.payment_cancelled_by_shopper': '결제 화면에서 결제를 취소하셨습니다.',
    'reason.payment_failed': '결제 처리 중 오류가 있었습니다.',
    'reason.payment_expired': '결제 시간이 지났습니다.',
    'reason.payment_unavailable': '결제 서비스를 이용할 수 없어 주문을 받지 못했습니다.',
    'reason.deadline_expired': '결제 기한이 지나 주문이 취소되었습니다.',
    'reason.cancelled_by_shopper': '요청하신 대로 주문을 취소했습니다.',
    'cancel.unpaid': '주문 취소',
    'cancel.paid': '취소하고 환불받기',
    'cancel.confirm': '한 번 더 누르면 취소됩니다',
    'cancel.sending': '취소를 요청하는 중…',
    'live.open': '실시간',
    'live.reconnecting': '다시 연결하는 중…',
    'timeline.heading': '진행 기록',
    'timeline.empty': '아직 기록이 없습니다.',
    'timeline.error': '진행 기록을 불러오지 못했습니다.',
    'event.OrderPlaced': '주문 접수',
    'event.PaymentReady': '결제 준비됨',
    'event.PaymentApproved': '결제 승인',
    'event.OrderCompleted': '주문 완료',
    'event.PaymentFailed': '결제 실패',
    'event.OrderCancelled': '주문 취소',
    'event.RefundRequested': '환불 요청',
    'event.PaymentRefunded': '환불 완료',
    'event.PaymentExpired': '결제 시간 만료',
    'event.PaymentCancelled': '결제 취소',
    'service.order': '주문 서비스',
    'service.payment': '결제 서비스',
    'service.notifier': '메일 서비스',
    'mails.heading': '메일',
    'mails.empty': '아직 보낸 메일이 없습니다.',
    'mails.unavailable': '지금은 메일 상태를 확인할 수 없습니다.',
    'mails.notSent': '아직 보내지 않음',
    'mail.payment_completed': '결제 완료 안내',
    'mail.order_completed': '주문 완료 안내',
    'mail.order_cancelled': '주문 취소 안내',
    'mail.order_refunded': '환불 안내',
    'mailStatus.PENDING': '보내는 중',
    'mailStatus.RETRYING': '다시 보내는 중',
    'mailStatus.SENT': '보냄',
    'mailStatus.FAILED': '보내지 못함',
    'back.shop': '← 상점으로 돌아가기',
  },
  en: {
    'shop.name': 'Saga Coffee',
    'shop.tagline': 'Roasted today, at your door tomorrow',
    'title.shop': 'Saga Coffee — beans and gear',
    'title.order': 'Your order — Saga Coffee',
    'lang.group': 'Language',
    'lang.ko': '한국어',
    'lang.en': 'English',
    'skip': 'Skip to content',
    'nav.orders': 'Your orders',
    'nav.order': 'Order {id}',
    'catalog.heading': 'Products',
    'catalog.loading': 'Loading products…',
    'catalog.empty': 'Nothing is for sale right now.',
    'catalog.error': 'Could not load the products.',
    'product.outOfStock': 'Out of stock',
    'product.qty': 'Quantity',
    'product.qtyFor': 'Quantity of {name}',
    'product.less': 'One less {name}',
    'product.more': 'One more {name}',
    'cart.heading': 'Cart',
    'cart.empty': 'Your cart is empty. Pick a quantity for what you would like.',
    'cart.line': '{name} × {qty}',
    'cart.total': 'Total',
    'cart.note': 'The final price is set when you place the order.',
    'checkout.email': 'E-mail',
    'checkout.emailHint': 'We send the order confirmation and payment notices here.',
    'checkout.place': 'Place order and pay',
    'checkout.placing': 'Placing your order…',
    'checkout.retrying': 'Connection trouble, trying again… ({n}/{max})',
    'checkout.preparing': 'Preparing your payment…',
    'checkout.redirecting': 'Taking you to the payment page…',
    'checkout.slow': 'Preparing the payment is taking longer than usual.',
    'checkout.orderLink': 'Check the order page',
    'error.network': 'Could not reach the shop. Check your connection and try again.',
    'error.400': 'Please check your order.',
    'error.401': 'You are not allowed to see this order.',
    'error.404': 'Order not found.',
    'error.409': 'That is not possible in the order’s current state.',
    'error.422': 'Your order changed meanwhile. Please place it once more.',
    'error.503': 'We cannot take orders for a moment. Please try again shortly.',
    'error.generic': 'Something went wrong (HTTP {status}).',
    'order.heading': 'Order',
    'order.id': 'Order number',
    'order.loading': 'Loading the order…',
    'order.noToken': 'This order can only be shown in the browser that placed it.',
    'order.badId': 'The address does not contain an order number.',
    'order.email': 'E-mail',
    'order.created': 'Placed',
    'order.deadline': 'Pay by',
    'order.completed': 'Completed',
    'order.cancelled': 'Cancelled',
    'order.refunded': 'Refunded',
    'order.pay': 'Go to payment',
    'order.items': 'Items',
    'order.col.item': 'Item',
    'order.col.qty': 'Qty',
    'order.col.unit': 'Unit price',
    'order.col.amount': 'Amount',
    'order.total': 'Total',
    'status.PENDING_PAYMENT': 'Waiting for payment',
    'status.CLOSING_PAYMENT': 'Confirming payment',
    'status.COMPLETED': 'Completed',
    'status.CANCELLING': 'Cancelling (refund in progress)',
    'status.CANCELLED': 'Cancelled',
    'hint.PENDING_PAYMENT': 'Your order is confirmed once you pay.',
    'hint.CLOSING_PAYMENT': 'We are confirming your payment. This takes a moment.',
    'hint.COMPLETED': 'Your order is complete. We will roast and ship it soon.',
    'hint.CANCELLING': 'We are cancelling the order and refunding your payment.',
    'hint.CANCELLED': 'This order was cancelled.',
    'reason.payment_declined': 'The payment was declined.',
    'reason.payment_cancelled_by_shopper': 'You cancelled the payment on the payment page.',
    'reason.payment_failed': 'The payment failed.',
    'reason.payment_expired': 'The payment timed out.',
    'reason.payment_unavailable': 'The payment service was unavailable, so the order could not be taken.',
    'reason.deadline_expired': 'The payment deadline passed.',
    'reason.cancelled_by_shopper': 'You cancelled this order.',
    'cancel.unpaid': 'Cancel order',
    'cancel.paid': 'Cancel and refund',
    'cancel.confirm': 'Click again to confirm',
    'cancel.sending': 'Cancelling…',
    'live.open': 'Live',
    'live.reconnecting': 'Reconnecting…',
    'timeline.heading': 'Timeline',
    'timeline.empty': 'Nothing recorded yet.',
    'timeline.error': 'Could not load the timeline.',
    'event.OrderPlaced': 'Order placed',
    'event.PaymentReady': 'Payment ready',
    'event.PaymentApproved': 'Payment approved',
    'event.OrderCompleted': 'Order completed',
    'event.PaymentFailed': 'Payment failed',
    'event.OrderCancelled': 'Order cancelled',
    'event.RefundRequested': 'Refund requested',
    'event.PaymentRefunded': 'Payment refunded',
    'event.PaymentExpired': 'Payment expired',
    'event.PaymentCancelled': 'Payment cancelled',
    'service.order': 'Order service',
    'service.payment': 'Payment service',
    'service.notifier': 'Mail service',
    'mails.heading': 'E-mails',
    'mails.empty': 'No e-mails yet.',
    'mails.unavailable': 'Mail status unavailable right now.',
    'mails.notSent': 'not sent yet',
    'mail.payment_completed': 'Payment received',
    'mail.order_completed': 'Order completed',
    'mail.order_cancelled': 'Order cancelled',
    'mail.order_refunded': 'Refund issued',
    'mailStatus.PENDING': 'Sending',
    'mailStatus.RETRYING': 'Retrying',
    'mailStatus.SENT': 'Sent',
    'mailStatus.FAILED': 'Failed',
    'back.shop': '← Back to the shop',
  },
};

function storedLang() {
  try { return localStorage.getItem(STORE_KEY); } catch { return null; }
}

function pickLang() {
  const fromUrl = new URLSearchParams(location.search).get('lang');
  if (LANGS.includes(fromUrl)) {
    // Persist it so the next page (or the return from the payment page) keeps it.
    try { localStorage.setItem(STORE_KEY, fromUrl); } catch { /* private mode */ }
    return fromUrl;
  }
  const stored = storedLang();
  if (LANGS.includes(stored)) return stored;
  // A Korean shop: Korean unless the browser clearly asks for English.
  return (navigator.language || '').toLowerCase().startsWith('en') ? 'en' : 'ko';
}

let current = pickLang();
const listeners = [];

export const lang = () => current;

export function has(key) {
  return key in dict[current];
}

export function t(key, vars = {}) {
  const text = dict[current][key] ?? dict.ko[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (m, name) => (name in vars ? String(vars[name]) : m));
}

// Falls back to the raw value, so a new event type or status from the server still shows.
export function tOr(key, raw) {
  return has(key) ? t(key) : String(raw);
}

export function formatPrice(amount) {
  const locale = current === 'ko' ? 'ko-KR' : 'en-US';
  return new Intl.NumberFormat(locale, { style: 'currency', currency: 'KRW' }).format(amount);
}

export function formatDate(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toLocaleString(current === 'ko' ? 'ko-KR' : 'en-US', { dateStyle: 'medium', timeStyle: 'medium' });
}

// Fills the static markup: data-i18n sets the text, data-i18n-aria the aria-label.
export function applyStatic(root = document) {
  document.documentElement.lang = current;
  for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll('[data-i18n-aria]')) el.setAttribute('aria-label', t(el.dataset.i18nAria));
  for (const btn of root.querySelectorAll('[data-lang]')) {
    btn.setAttribute('aria-pressed', String(btn.dataset.lang === current));
  }
}

export function setLang(next) {
  if (!LANGS.includes(next) || next === current) return;
  current = next;
  try { localStorage.setItem(STORE_KEY, next); } catch { /* private mode */ }
  // The URL parameter wins over storage, so it must follow the toggle or a reload undoes it.
  const url = new URL(location.href);
  if (url.searchParams.has('lang')) {
    url.searchParams.set('lang', next);
    history.replaceState(history.state, '', url);
  }
  applyStatic();
  for (const fn of listeners) fn(next);
}

// Wires the 한국어 / English buttons and calls onChange after each switch.
export function initI18n(onChange) {
  if (onChange) listeners.push(onChange);
  for (const btn of document.querySelectorAll('[data-lang]')) {
    btn.addEventListener('click', () => setLang(btn.dataset.lang));
  }
  applyStatic();
}
