// The live dashboard, in the browser: every saga event comes from GET /dashboard/stream (one SSE
// message each); the sagas, their steps and the counters are computed here from those events.
// The queues come from GET /dashboard/state, which the server reads from the management API.

const SERVICES = ['order-creation', 'inventory', 'replenishment', 'shipment'];
const TERMINAL = new Set(['COMPLETED', 'CANCELLED']);
/** What each event means on the page: its kind (colour) and its label. */
const STEPS = {
  'order.created': ['forward', 'created'],
  'inventory.reserved': ['forward', 'reserved'],
  'inventory.backordered': ['forward', 'backordered'],
  'replenishment.completed': ['forward', 'restocked'],
  'shipment.dispatched': ['forward', 'dispatched'],
  'order.completed': ['forward', 'completed'],
  'shipment.cancel_rejected': ['forward', 'cancel rejected'],
  'inventory.rejected': ['failure', 'rejected ✗'],
  'replenishment.failed': ['failure', 'failed ✗'],
  'shipment.failed': ['failure', 'failed ✗'],
  'order.cancel_requested': ['failure', 'cancel requested'],
  'order.cancelled': ['failure', 'cancelled ✗'],
  'shipment.cancelled': ['compensation', '↺ never ships'],
  'inventory.released': ['compensation', '↺ released'],
  'replenishment.cancelled': ['compensation', '↺ purchases off'],
  'stock.low': ['forward', 'stock low'],
};
const STATUS_AFTER = {
  'order.created': 'PENDING',
  'inventory.backordered': 'AWAITING_STOCK',
  'inventory.reserved': 'RESERVED',
  'order.cancel_requested': 'CANCELLING',
  'order.completed': 'COMPLETED',
  'order.cancelled': 'CANCELLED',
};
const SHOWN = 40;
const KEPT = 2000;

const sagas = new Map();
const seen = new Set();
const seenOrder = [];
let lastEventId;
let source;
let selected;
let dirty = false;

const $ = (id) => document.getElementById(id);
const actionsAllowed = document.body.dataset.actions === 'true';

function sagaOf(orderId) {
  let saga = sagas.get(orderId);
  if (!saga) {
    saga = { id: orderId, status: 'PENDING', events: [], owed: undefined, reported: new Set() };
    sagas.set(orderId, saga);
    if (sagas.size > KEPT) sagas.delete(sagas.keys().next().value);
  }
  return saga;
}

/** One saga event from the stream: into its saga, once (a resumed stream may repeat some). */
function take(event) {
  if (seen.has(event.eventId)) return;
  seen.add(event.eventId);
  seenOrder.push(event.eventId);
  if (seenOrder.length > KEPT * 20) seen.delete(seenOrder.shift());
  if (!event.orderId) return;
  const saga = sagaOf(event.orderId);
  // Lit up from when it happened: events replayed on (re)connection come in unlit.
  event.receivedAt = Date.parse(event.at) || Date.now();
  saga.events.push(event);
  saga.events.sort((a, b) => (a.at < b.at ? -1 : a.at > b.at ? 1 : 0));
  const at = Date.parse(event.at);
  if (event.type === 'order.created') saga.createdAt = at;
  saga.createdAt = Math.min(saga.createdAt ?? at, at);
  const next = STATUS_AFTER[event.type];
  // A status only moves forward: a late event (out of order) does not undo a terminal one.
  if (next && !TERMINAL.has(saga.status)) saga.status = next;
  if (event.type === 'shipment.cancel_rejected' && saga.status === 'CANCELLING') saga.status = 'RESERVED';
  if (event.type === 'order.cancelled') {
    saga.reason = event.data.reason;
    saga.owed = event.data.compensations ?? [];
  }
  if (event.type === 'inventory.released' || event.type === 'replenishment.cancelled')
    saga.reported.add(event.type);
  if (TERMINAL.has(saga.status) && saga.endedAt === undefined && STATUS_AFTER[event.type] === saga.status)
    saga.endedAt = at;
  dirty = true;
}

/** "compensating…" until every compensation order.cancelled named has reported, then "compensated". */
function settlement(saga) {
  if (saga.status !== 'CANCELLED' || !saga.owed) return undefined;
  const pending = saga.owed.filter((type) => !saga.reported.has(type));
  return pending.length === 0
    ? ['compensated', 'compensated']
    : ['compensating', `compensating… (${pending.join(', ')})`];
}

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const child of children) if (child !== undefined) node.append(child);
  return node;
}

/** A step, lit up while it is new: its glow carries on across re-renders instead of starting over. */
function stepChip(event) {
  const [kind, label] = STEPS[event.type] ?? ['forward', event.type];
  const age = Date.now() - (event.receivedAt ?? 0);
  const chip = el(
    'span',
    { className: `step ${kind}${age < 1500 ? ' new' : ''}`, title: `${event.type} at ${event.at}` },
    label,
  );
  if (age < 1500) chip.style.animationDelay = `-${age}ms`;
  return chip;
}

function percentile(sorted, p) {
  if (sorted.length === 0) return undefined;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

function renderCounters() {
  const now = Date.now();
  let created = 0;
  const inFlight = {};
  const outcomes = {};
  const durations = [];
  for (const saga of sagas.values()) {
    if (saga.createdAt > now - 10_000) created++;
    if (!TERMINAL.has(saga.status)) inFlight[saga.status] = (inFlight[saga.status] ?? 0) + 1;
    else {
      const key = saga.status === 'COMPLETED' ? 'COMPLETED' : `CANCELLED ${saga.reason ?? ''}`;
      outcomes[key] = (outcomes[key] ?? 0) + 1;
      if (saga.endedAt > now - 60_000 && saga.createdAt) durations.push(saga.endedAt - saga.createdAt);
    }
  }
  durations.sort((a, b) => a - b);
  $('rate').textContent = (created / 10).toFixed(1);
  const ms = (v) => (v === undefined ? '–' : `${Math.round(v)} ms`);
  $('p50').textContent = ms(percentile(durations, 50));
  $('p99').textContent = ms(percentile(durations, 99));
  const tally = (node, counts) => {
    const entries = Object.entries(counts).sort();
    node.replaceChildren(
      ...(entries.length === 0 ? [el('span', { className: 'muted' }, 'none')] : []),
      ...entries.map(([key, n]) => el('span', {}, el('b', {}, String(n)), ` ${key}`)),
    );
  };
  tally($('in-flight'), inFlight);
  tally($('outcomes'), outcomes);
}

function renderSagas() {
  const newest = [...sagas.values()].sort((a, b) => (b.createdAt ?? 0) - (a.createdAt ?? 0)).slice(0, SHOWN);
  $('no-sagas').hidden = newest.length > 0;
  $('sagas').tBodies[0].replaceChildren(
    ...newest.map((saga) => {
      const settle = settlement(saga);
      const live = TERMINAL.has(saga.status) ? '' : ' live';
      const row = el(
        'tr',
        { className: saga.id === selected ? 'selected' : '', title: saga.id },
        el('td', { className: 'mono' }, `…${saga.id.slice(-8)}`),
        el(
          'td',
          {},
          el('span', { className: `status ${saga.status}${live}` }, saga.status),
          saga.reason ? el('span', { className: 'settle' }, saga.reason) : undefined,
          settle ? el('span', { className: `settle ${settle[0]}` }, settle[1]) : undefined,
        ),
        ...SERVICES.map((service) =>
          el('td', {}, ...saga.events.filter((e) => e.source === service).map(stepChip)),
        ),
      );
      row.dataset.orderId = saga.id;
      row.dataset.status = saga.status;
      if (settle) row.dataset.settlement = settle[0];
      row.addEventListener('click', () => showDetail(saga.id));
      return row;
    }),
  );
}

async function showDetail(orderId) {
  selected = orderId;
  dirty = true;
  $('detail').hidden = false;
  $('detail-id').textContent = orderId;
  const saga = sagas.get(orderId);
  const draw = (order) => {
    const events = order?.timeline ?? saga?.events ?? [];
    const status = order ?? saga ?? {};
    $('detail-status').textContent = [
      status.status,
      status.reason,
      order?.settledAt
        ? `settled ${order.settledAt}`
        : status.status === 'CANCELLED'
          ? 'not settled yet'
          : '',
    ]
      .filter(Boolean)
      .join(' · ');
    $('detail-timeline').replaceChildren(
      ...events.map((e) =>
        el(
          'li',
          {},
          el('span', { className: 'mono' }, `${e.at.slice(11, 23)} `),
          stepChip(e),
          ` ${e.type} (${e.source})${e.detail || e.data?.detail ? `: ${e.detail ?? e.data.detail}` : ''}`,
        ),
      ),
    );
  };
  draw(undefined);
  // The order API has the whole timeline, also of sagas older than this page.
  const response = await fetch(`/orders/${encodeURIComponent(orderId)}`);
  if (response.ok && selected === orderId) draw(await response.json());
}

function render() {
  if (dirty) {
    dirty = false;
    renderSagas();
    if (selected && sagas.has(selected) && !$('detail').hidden) {
      const saga = sagas.get(selected);
      if (saga.events.length !== Number($('detail').dataset.count ?? -1)) {
        $('detail').dataset.count = String(saga.events.length);
        void showDetail(selected);
      }
    }
  }
  renderCounters();
}

/** Opens the stream; EventSource reconnects by itself and sends Last-Event-ID when it does. */
function connect() {
  const url = lastEventId
    ? `/dashboard/stream?lastEventId=${encodeURIComponent(lastEventId)}`
    : '/dashboard/stream';
  source = new EventSource(url);
  source.onopen = () => {
    $('connection').textContent = 'live';
    $('connection').className = 'pill live';
  };
  source.onerror = () => {
    $('connection').textContent = 'reconnecting…';
    $('connection').className = 'pill down';
  };
  source.onmessage = (message) => {
    lastEventId = message.lastEventId || lastEventId;
    take(JSON.parse(message.data));
  };
}

/** Closes the stream (a page put to sleep, a network gone). */
function drop() {
  source?.close();
  $('connection').textContent = 'offline';
  $('connection').className = 'pill down';
}

/** Opens a new stream that resumes after the last event seen (a page coming back to life). */
function reconnect() {
  drop();
  connect();
}

async function post(path, body) {
  const response = await fetch(path, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(answer.detail ?? answer.title ?? `HTTP ${response.status}`);
  return answer;
}

function setUpActions() {
  if (!actionsAllowed) {
    $('actions-off').hidden = false;
    for (const form of ['order-form', 'traffic-form'])
      for (const input of $(form).elements) input.disabled = true;
    return;
  }
  $('order-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    const order = {
      customerId: 'dashboard',
      items: [{ sku: form.get('sku'), quantity: Number(form.get('quantity')) }],
      shippingAddress: {
        name: 'Ada Lovelace',
        line1: '1 Main St',
        city: 'Berlin',
        postalCode: '10115',
        country: String(form.get('country')).toUpperCase(),
      },
    };
    const failAt = form.get('failAt') || undefined;
    try {
      const placed = await post('/dashboard/orders', { order, ...(failAt ? { failAt } : {}) });
      $('order-result').textContent = `placed …${placed.id.slice(-8)}`;
      $('order-result').dataset.orderId = placed.id;
    } catch (error) {
      $('order-result').textContent = `refused: ${error.message}`;
    }
  });
  $('traffic-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    try {
      await post('/dashboard/traffic', {
        action: 'start',
        rate: Number(form.get('rate')),
        duration: Number(form.get('duration')),
        failures: Number(form.get('failures')),
      });
      void poll();
    } catch (error) {
      $('traffic-state').textContent = `refused: ${error.message}`;
    }
  });
  $('traffic-stop').addEventListener('click', async () => {
    await post('/dashboard/traffic', { action: 'stop' }).catch(() => {});
    void poll();
  });
}

function renderState(state) {
  $('queues-error').hidden = !state.error;
  $('queues-error').textContent = state.error ?? '';
  const short = (name) => name.slice(state.exchange.length + 1);
  $('queues').tBodies[0].replaceChildren(
    ...state.queues.map((q) =>
      el(
        'tr',
        {},
        el('td', { className: 'mono', title: q.name }, short(q.name)),
        ...[q.ready, q.unacked, q.consumers, q.publishRate, q.deliverRate, q.ackRate].map((v) =>
          el('td', {}, String(v)),
        ),
      ),
    ),
  );
  $('parked').replaceChildren(
    ...Object.entries(state.parked).map(([service, { count, messages }]) => {
      const replay = el('button', { type: 'button', disabled: !actionsAllowed || count === 0 }, 'Replay');
      replay.dataset.service = service;
      replay.addEventListener('click', async () => {
        replay.disabled = true;
        try {
          const result = await post('/dashboard/replay', { service });
          replay.textContent = `replayed ${result.replayed}`;
        } catch (error) {
          replay.textContent = `refused: ${error.message}`;
        }
        void poll();
      });
      return el(
        'div',
        { className: 'parked-service' },
        el('b', {}, service),
        ` ${count} parked `,
        replay,
        messages.length > 0
          ? el(
              'ul',
              {},
              ...messages.map((m) =>
                el(
                  'li',
                  {},
                  `${m.routingKey ?? '?'} ${m.messageId ?? ''}: ${m.reason ?? '?'}${m.error ? ` (${m.error})` : ''}`,
                ),
              ),
            )
          : undefined,
      );
    }),
  );
  const t = state.traffic;
  $('traffic-state').textContent = t.running
    ? `running: ${t.rate}/s for ${t.durationS} s, failures ${t.failures}; ${t.placed} placed${t.refused ? `, ${t.refused} refused` : ''}`
    : 'stopped';
}

async function poll() {
  try {
    const response = await fetch('/dashboard/state');
    if (response.ok) renderState(await response.json());
  } catch {
    // The next poll tries again.
  }
}

$('detail-close').addEventListener('click', () => {
  $('detail').hidden = true;
  selected = undefined;
  dirty = true;
});
setUpActions();
connect();
void poll();
setInterval(poll, 2000);
// Rendered a few times a second, not once per event: traffic brings hundreds a second.
setInterval(render, 250);
window.dashboard = { drop, reconnect, sagas };
