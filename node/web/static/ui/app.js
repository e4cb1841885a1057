// rbee node page: live cluster view, chat, job actions. Vanilla JS, no
// dependencies. It talks only to the node that served it, with fetch()
// (streams for SSE, so it can send a key as a bearer token).
'use strict';
(() => {
  const TOKEN_KEY = 'rbee.token';
  const BACKOFF_MIN = 1000, BACKOFF_MAX = 30000; // feed reconnect, ms
  const MAX_JOB_CARDS = 20; // actions started from this page that stay shown
  const MAX_JOBS_SHOWN = 20; // jobs of the snapshot shown
  const BUNDLED_MODEL = 'builtin:stories260k'; // the tiny model every rbee can fetch

  const $ = (id) => document.getElementById(id);
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  // h builds an element: h('div', {class: 'x', dataset: {id: 1}}, child...).
  // Text children become text nodes: nothing is ever parsed as HTML.
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'dataset') Object.assign(el.dataset, v);
      else if (k === 'class') el.className = v;
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else if (k in el && typeof v !== 'string') el[k] = v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const k of kids.flat(Infinity)) {
      if (k === undefined || k === null || k === false) continue;
      el.append(k instanceof Node ? k : document.createTextNode(String(k)));
    }
    return el;
  }

  function fmtBytes(n) {
    if (!n) return '0 B';
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n : n.toFixed(n < 10 ? 1 : 0)) + ' ' + u[i];
  }

  // ---- token -------------------------------------------------------------

  // A key is saved in localStorage only on an https: page. A plain HTTP
  // page is the node's loopback listener, and its origin is just an
  // address and port: while the node is stopped (a restart, an upgrade)
  // any local user may listen there, and a page served from it is this
  // same origin and reads this origin's storage, the admin key with it.
  // There the key lives in this page's memory only (asked again after a
  // reload), and a key an earlier page saved is removed.
  const PERSIST_TOKEN = location.protocol === 'https:';
  let memToken = '';
  function storeToken(t) { try { t ? localStorage.setItem(TOKEN_KEY, t) : localStorage.removeItem(TOKEN_KEY); } catch (_) { /* private mode */ } }
  if (!PERSIST_TOKEN) storeToken('');
  function getToken() {
    if (!PERSIST_TOKEN) return memToken;
    try { return localStorage.getItem(TOKEN_KEY) || ''; } catch (_) { return ''; }
  }
  function setToken(t) {
    if (PERSIST_TOKEN) storeToken(t);
    else memToken = t;
  }

  let tokenWaiters = [];
  // tokenReady resolves when the user saves a token.
  const tokenReady = () => new Promise((r) => tokenWaiters.push(r));

  class AuthError extends Error {}

  function askToken(why) {
    $('token-why').textContent = why || 'This node asks for a key.';
    $('token-form').hidden = false;
    $('token-input').focus();
  }

  $('token-open').addEventListener('click', () => {
    const f = $('token-form');
    f.hidden = !f.hidden;
  });
  $('token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    setToken($('token-input').value.trim());
    $('token-input').value = '';
    $('token-form').hidden = true;
    const ws = tokenWaiters;
    tokenWaiters = [];
    ws.forEach((r) => r());
    restartFeed();
  });
  $('token-clear').addEventListener('click', () => { setToken(''); $('token-input').value = ''; restartFeed(); });

  // The feed shows the jobs its key may list: a new key opens it again.
  let feedCtl = null;
  function restartFeed() { if (feedCtl) feedCtl.abort(); }

  // ---- HTTP ---------------------------------------------------------------

  // errorText reads an API error body ({"error":{"code","message"}}, the
  // node's and OpenAI's shape) or falls back to the status line.
  async function errorText(res) {
    let body = '';
    try { body = await res.text(); } catch (_) { /* ignore */ }
    try {
      const e = JSON.parse(body).error;
      if (e && e.message) return (e.code ? e.code + ': ' : '') + e.message;
    } catch (_) { /* not JSON */ }
    return 'HTTP ' + res.status + (body ? ': ' + body.slice(0, 300) : '');
  }

  // api fetches from this node with the token; a 401 asks for the token and
  // throws AuthError.
  async function api(path, opts) {
    opts = opts || {};
    const headers = Object.assign({}, opts.headers);
    const t = getToken();
    if (t) headers.Authorization = 'Bearer ' + t;
    const res = await fetch(path, Object.assign({}, opts, { headers, cache: 'no-store' }));
    if (res.status === 401) {
      const msg = await errorText(res);
      askToken(t ? 'The saved key was refused (' + msg + '). Enter a key.' : 'This node asks for a key: ' + msg);
      throw new AuthError(msg);
    }
    if (res.status === 403) {
      // Beyond this key's rights: an action (e.g. spawn without the admin
      // key), or the feed for a key without read (an inference key off
      // the node's machine). Ask for a better key and let the caller
      // retry; the node is up, so the page must not say "offline".
      const msg = await errorText(res);
      askToken(opts.method === 'POST' ? 'This action needs the admin key: ' + msg : 'This key may not read this node: ' + msg);
      throw new AuthError(msg);
    }
    return res;
  }

  const readSSE = window.rbeeSSE.readSSE;

  // ---- cluster feed -------------------------------------------------------

  function setConn(text, cls) {
    const c = $('conn');
    c.textContent = text;
    c.className = 'pill ' + cls;
  }

  async function feed() {
    let backoff = BACKOFF_MIN;
    for (;;) {
      try {
        feedCtl = new AbortController();
        const res = await api('/v1/cluster/events', { headers: { Accept: 'text/event-stream' }, signal: feedCtl.signal });
        if (!res.ok) throw new Error(await errorText(res));
        setConn('live', 'ok');
        await readSSE(res, (ev) => {
          if (ev.event !== 'state') return;
          backoff = BACKOFF_MIN;
          render(JSON.parse(ev.data));
        });
        throw new Error('the feed ended');
      } catch (e) {
        if (e instanceof AuthError) {
          setConn('key needed', 'bad');
          await tokenReady();
          continue;
        }
        if (e && e.name === 'AbortError') {
          setConn('connecting…', 'warn'); // a new key: at once
          continue;
        }
        const wait = backoff + Math.random() * backoff / 2;
        setConn('offline, retrying in ' + Math.round(wait / 1000) + ' s', 'off');
        $('conn').title = String(e && e.message || e);
        await sleep(wait);
        backoff = Math.min(backoff * 2, BACKOFF_MAX);
        setConn('connecting…', 'warn');
      }
    }
  }

  // ---- rendering ----------------------------------------------------------

  const stateClass = (s) => ({ alive: 'ok', ready: 'ok', idle: 'ok', busy: 'warn', running: 'warn', starting: 'warn', registering: 'warn', suspect: 'warn', retiring: 'warn', ok: 'ok' }[s] || 'bad');

  function usage(label, total, free) {
    if (!total) return null;
    const used = total - (free || 0);
    return [h('dt', null, label), h('dd', { class: 'bar' },
      h('meter', { min: 0, max: total, value: used, low: total * 0.7, high: total * 0.9, optimum: 0 }),
      h('span', null, fmtBytes(used) + ' / ' + fmtBytes(total)))];
  }

  // pageURL is where this browser can open a node's own page, '' when it
  // cannot. A plain HTTP listener on loopback is reachable only on its
  // node's machine: this browser is there when this page came over
  // loopback, and the node is on this page's node's machine when its
  // gossip address is loopback or has the same host (several nodes of one
  // machine). Otherwise the node's HTTPS listener, at its gossip address's
  // host when it listens on every interface.
  const addrHost = (a) => (a || '').replace(/:\d+$/, '');
  const addrPort = (a) => ((a || '').match(/:(\d+)$/) || [])[1] || '';
  const wildHost = (h) => ['0.0.0.0', '[::]', '::', ''].includes(h);
  const loopHost = (h) => h === 'localhost' || h.endsWith('.localhost') || /^127\./.test(h) || h === '[::1]' || h === '::1';
  let selfNode = null; // the node that served this page, from the snapshot
  function pageURL(n) {
    const g = addrHost(n.gossip_addr);
    const here = loopHost(location.hostname) && (n === selfNode || loopHost(g) || (!!selfNode && g !== '' && g === addrHost(selfNode.gossip_addr)));
    const reach = (h) => !wildHost(h) && (!loopHost(h) || here);
    if (n.http_addr && reach(addrHost(n.http_addr))) return 'http://' + n.http_addr + '/';
    if (n.https_addr) {
      const h = wildHost(addrHost(n.https_addr)) ? g : addrHost(n.https_addr);
      if (reach(h)) return 'https://' + h + ':' + addrPort(n.https_addr) + '/';
    }
    return '';
  }

  function pageLink(n) {
    const url = pageURL(n);
    return url ? h('a', { href: url, rel: 'noopener' }, h('code', null, url.replace(/^https?:\/\//, '').replace(/\/$/, ''))) : h('code', null, n.http_addr);
  }

  function nodeCard(n) {
    const cap = n.capabilities || {};
    const dl = h('dl', null,
      h('dt', null, 'role'), h('dd', null, (n.leader ? 'queen (leader)' : 'hive') + (n.voter ? ', voter' : ', non-voter')),
      cap.cpu_model || cap.cores ? [h('dt', null, 'CPU'), h('dd', null, (cap.cpu_model || 'cpu') + (cap.cores ? ' · ' + cap.cores + ' cores' : '') + (cap.threads ? ' / ' + cap.threads + ' threads' : ''))] : null,
      usage('RAM', cap.ram_total, cap.ram_free),
      (cap.gpus || []).map((g) => [h('dt', null, 'GPU'), h('dd', null, [g.vendor, g.name].filter(Boolean).join(' ')), usage('VRAM', g.vram_total, g.vram_free)]),
      (cap.gpus || []).length || !n.capabilities ? null : [h('dt', null, 'GPU'), h('dd', { class: 'muted' }, 'none')],
      cap.os ? [h('dt', null, 'OS'), h('dd', null, cap.os + '/' + (cap.arch || '?'))] : null,
      n.version ? [h('dt', null, 'version'), h('dd', null, n.version)] : null,
      n.http_addr ? [h('dt', null, 'API'), h('dd', null, pageLink(n))] : null);
    return h('article', { class: 'card node' + (n.leader ? ' leader' : ''), dataset: { name: n.name, state: n.state || '', leader: String(!!n.leader) } },
      h('div', { class: 'title' }, h('span', { class: 'name' }, n.name),
        h('span', { class: 'pill ' + stateClass(n.state) }, n.state || 'unknown'),
        n.leader ? h('span', { class: 'pill queen', title: 'the leader acts as the queen' }, '♛ queen') : null),
      dl);
  }

  function workerCard(w) {
    const retiring = w.state === 'retiring';
    return h('article', { class: 'card worker', dataset: { id: w.id, state: w.state || '', model: w.model || '' } },
      h('div', { class: 'title' }, h('code', { class: 'name' }, w.id),
        h('span', { class: 'pill ' + stateClass(w.state) }, w.state || '?'),
        h('span', { class: 'pill live-state', hidden: true }),
        h('span', { class: 'pill warn unschedulable', title: 'not taking new requests', hidden: true }, 'not schedulable')),
      h('dl', null,
        h('dt', null, 'model'), h('dd', { class: 'model' }, w.model),
        h('dt', null, 'node'), h('dd', null, w.node + ' · ' + (w.device || 'cpu')),
        w.group ? h('dt', null, 'group') : null, w.group ? h('dd', { class: 'group' }, groupText(w)) : null,
        h('dt', null, 'in flight'), h('dd', { class: 'inflight' }),
        h('dt', null, 'tokens/s'), h('dd', { class: 'tps' }),
        h('dt', null, 'heartbeat'), h('dd', { class: 'hb' })),
      h('div', { class: 'row' }, h('button', { type: 'button', class: 'danger retire', disabled: retiring, onclick: () => retire(w) }, retiring ? 'retiring…' : 'Retire')));
  }

  // groupCard is a group that no worker card shows: its state, its
  // shards' parts and why it failed; retiring it retires the group.
  function groupCard(g) {
    const shards = g.shards || [], retiring = g.state === 'retiring';
    const unit = g.mode === 'tensor' ? 'KV heads ' : 'layers ';
    return h('article', { class: 'card group', dataset: { id: g.id, state: g.state || '' } },
      h('div', { class: 'title' }, h('code', { class: 'name' }, g.id),
        h('span', { class: 'pill ' + stateClass(g.state) }, g.state || '?')),
      h('dl', null,
        h('dt', null, 'model'), h('dd', { class: 'model' }, g.model),
        h('dt', null, 'group'), h('dd', { class: 'shards' }, g.mode + ' · ' + shards.map((s) => s.node + ' ' + unit + s.lo + '–' + s.hi).join(', ')),
        g.error ? h('dt', null, 'why') : null, g.error ? h('dd', { class: 'error' }, g.error) : null),
      h('div', { class: 'row' }, h('button', { type: 'button', class: 'danger retire', disabled: retiring,
        onclick: () => retire({ id: g.id, model: g.model, node: shards.map((s) => s.node).join(', ') }) }, retiring ? 'retiring…' : 'Retire')));
  }

  // groupText describes a sharded group's worker: the group, its mode
  // and state, this worker's part and whether it is the head (retiring
  // any shard retires the whole group).
  function groupText(w) {
    const g = w.group, shards = g.shards || [];
    const i = shards.findIndex((s) => s.worker_id === w.id);
    const part = i < 0 ? '' : ' · ' + (g.mode === 'tensor' ? 'KV heads ' : 'layers ') + shards[i].lo + '–' + shards[i].hi;
    return g.id + ' · ' + g.mode + ' · ' + g.state + ' · shard ' + (i + 1) + '/' + shards.length + (i === 0 ? ' (head)' : '') + part;
  }

  // The fields of a worker that change with every heartbeat: updated in
  // place, so that the card (and the button under the pointer) stays.
  // The live state (the worker's own word in its heartbeat) and whether it
  // takes requests come and go with heartbeats too.
  const WORKER_LIVE = ['in_flight', 'queued', 'tokens_per_second', 'last_heartbeat_age_ms', 'live_state', 'schedulable'];

  function workerLive(el, w) {
    const live = el.querySelector('.live-state');
    live.hidden = !(w.live_state && w.live_state !== w.state);
    live.className = 'pill live-state ' + stateClass(w.live_state);
    live.textContent = w.live_state || '';
    el.querySelector('.unschedulable').hidden = !!w.schedulable;
    el.querySelector('.inflight').textContent = String(w.in_flight || 0) + (w.queued ? ' (+' + w.queued + ' queued)' : '');
    el.querySelector('.tps').textContent = (w.tokens_per_second || 0).toFixed(1);
    el.querySelector('.hb').textContent = w.last_heartbeat_age_ms >= 0 ? (w.last_heartbeat_age_ms / 1000).toFixed(1) + ' s ago' : '—';
  }

  function replace(el, kids, emptyText) {
    el.replaceChildren(...(kids.length ? kids : [h('p', { class: 'empty' }, emptyText)]));
  }

  // keyed renders a list of items into container, reusing the element of
  // an item whose signature did not change (live() then refreshes its
  // volatile parts) and touching the DOM only when something changed.
  const built = new WeakMap(); // container -> Map(key -> {sig, el})
  function keyed(container, items, keyOf, sigOf, make, live, emptyText) {
    const prev = built.get(container) || new Map();
    const next = new Map();
    const els = items.map((it) => {
      const k = keyOf(it), sig = sigOf(it);
      let e = prev.get(k);
      if (!e || e.sig !== sig) e = { sig, el: make(it) };
      if (live) live(e.el, it);
      next.set(k, e);
      return e.el;
    });
    built.set(container, next);
    const cur = container.children;
    if (els.length === 0) {
      if (!(cur.length === 1 && cur[0].classList.contains('empty'))) replace(container, [], emptyText);
    } else if (cur.length !== els.length || els.some((el, i) => cur[i] !== el)) {
      container.replaceChildren(...els);
    }
  }

  // memo re-renders a container only when its data changed.
  const shown = new WeakMap(); // container -> last data JSON
  function memo(container, data, draw) {
    const sig = JSON.stringify(data);
    if (shown.get(container) === sig) return;
    shown.set(container, sig);
    draw();
  }

  // fillSelect sets a select's options, keeping the chosen value if it is
  // still offered.
  function fillSelect(sel, values) {
    const cur = sel.value;
    const same = sel.options.length === values.length && values.every((v, i) => sel.options[i].value === v);
    if (!same) sel.replaceChildren(...values.map((v) => h('option', { value: v }, v)));
    if (values.includes(cur)) sel.value = cur;
  }

  let servedKey = null;

  function render(snap) {
    const st = snap.status || {};
    const nodes = st.nodes || [], workers = st.workers || [], models = st.models || [], jobs = snap.jobs || [];
    $('here').textContent = 'node ' + (st.node || '?') + ' · ' + (st.raft_state || '?') + ' · queen: ' + (st.leader || 'none');
    const alive = nodes.filter((n) => n.state === 'alive').length;
    $('summary').textContent = '· ' + alive + '/' + nodes.length + ' alive · ' + workers.length + ' worker' + (workers.length === 1 ? '' : 's') + ' · ' + (st.in_flight || 0) + ' in flight';
    document.title = 'rbee · ' + (st.node || '') + (st.leader ? ' (queen ' + st.leader + ')' : '');
    $('insecure-banner').hidden = !snap.insecure_http;

    selfNode = nodes.find((n) => n.name === st.node) || null;
    keyed($('nodes'), nodes, (n) => n.id || n.name, (n) => JSON.stringify(n), nodeCard, null, 'no nodes');
    keyed($('workers'), workers, (w) => w.id,
      (w) => JSON.stringify(w, (k, v) => (WORKER_LIVE.includes(k) ? undefined : v)), workerCard, workerLive, 'no workers: spawn one below');
    // A group none of whose shards has a worker card (failed, its
    // shards gone; or starting) gets a card of its own, saying why.
    const carded = new Set(workers.map((w) => w.id));
    const lone = (st.groups || []).filter((g) => !(g.shards || []).some((s) => carded.has(s.worker_id)));
    $('groups').hidden = lone.length === 0;
    keyed($('groups'), lone, (g) => g.id, (g) => JSON.stringify(g), groupCard, null, '');

    const names = {};
    nodes.forEach((n) => { names[n.id] = n.name; });
    memo($('models'), [models, names], () => {
      const rows = models.slice().sort((a, b) => (names[a.node_id] || a.node_id).localeCompare(names[b.node_id] || b.node_id) || a.model_id.localeCompare(b.model_id))
        .map((m) => h('tr', { dataset: { node: names[m.node_id] || m.node_id, model: m.model_id } },
          h('td', null, names[m.node_id] || m.node_id), h('td', null, m.model_id),
          h('td', null, fmtBytes(m.size)), h('td', { class: 'opt' }, m.quantization || '')));
      replace($('models'), rows.length ? [h('table', null, h('thead', null, h('tr', null, h('th', null, 'node'), h('th', null, 'model'), h('th', null, 'size'), h('th', { class: 'opt' }, 'quant'))), h('tbody', null, rows))] : [], 'no models on any node');
    });

    memo($('jobs'), jobs.slice(0, MAX_JOBS_SHOWN), () => {
      const jobRows = jobs.slice(0, MAX_JOBS_SHOWN).map((j) => h('tr', { dataset: { job: j.job_id, status: j.status } },
        h('td', null, j.operation, h('br'), h('code', { class: 'muted' }, j.job_id)),
        h('td', null, h('span', { class: 'pill ' + stateClass(j.status) }, j.status)),
        h('td', null, j.total ? h('div', { class: 'bar' }, h('progress', { max: j.total, value: j.done || 0 }), h('span', null, Math.floor(100 * (j.done || 0) / j.total) + '%')) : null,
          j.message ? h('div', { class: 'muted' }, j.message) : null)));
      replace($('jobs'), jobRows.length ? [h('table', null, h('thead', null, h('tr', null, h('th', null, 'job'), h('th', null, 'status'), h('th', null, 'progress'))), h('tbody', null, jobRows))] : [], 'no jobs on this node');
    });

    const hives = nodes.filter((n) => n.state === 'alive').map((n) => n.name);
    document.querySelectorAll('.hive-select').forEach((s) => fillSelect(s, hives));
    // Catalog ids (spawn on a node that has the model) and the bundled
    // model, which every node can fetch.
    const refs = [...new Set(models.map((m) => m.model_id).concat(workers.map((w) => w.model), [BUNDLED_MODEL]))].filter(Boolean).sort();
    memo($('model-refs'), refs, () => $('model-refs').replaceChildren(...refs.map((r) => h('option', { value: r }))));

    // The chat's model list follows the servable models; fetch it only when
    // that set changes.
    const key = workers.filter((w) => w.schedulable).map((w) => w.model).sort().join('\n');
    if (key !== servedKey) {
      servedKey = key;
      loadModels();
    }
  }

  // ---- chat ---------------------------------------------------------------

  async function loadModels() {
    try {
      const res = await api('/v1/models');
      if (!res.ok) throw new Error(await errorText(res));
      const ids = ((await res.json()).data || []).map((m) => m.id);
      const sel = $('chat-model');
      fillSelect(sel, ids);
      sel.disabled = ids.length === 0;
      if (!ids.length) sel.replaceChildren(h('option', { value: '' }, 'no model is served yet'));
    } catch (e) {
      if (!(e instanceof AuthError)) console.warn('models:', e);
    }
  }

  let history = [];
  let chatAbort = null;

  function chatMsg(role, text) {
    const body = h('span', { class: 'text' }, text);
    const m = h('div', { class: 'msg ' + role, dataset: { state: role === 'assistant' ? 'streaming' : 'done' } }, h('b', null, role), body);
    $('chat-log').append(m);
    $('chat-log').scrollTop = $('chat-log').scrollHeight;
    return { el: m, body };
  }

  $('chat-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const prompt = $('chat-prompt').value;
    const model = $('chat-model').value;
    if (!prompt.trim() || !model || chatAbort) return;
    $('chat-prompt').value = '';
    history.push({ role: 'user', content: prompt });
    chatMsg('user', prompt);
    const out = chatMsg('assistant', '');
    const ctrl = new AbortController();
    chatAbort = ctrl;
    $('chat-send').disabled = true;
    $('chat-stop').disabled = false;
    let text = '', failed = '', chunks = 0;
    try {
      const max = parseInt($('chat-max').value, 10) || 128;
      const temp = parseFloat($('chat-temp').value);
      const res = await api('/v1/chat/completions', {
        method: 'POST', signal: ctrl.signal,
        headers: { 'Content-Type': 'application/json', Accept: 'text/event-stream' },
        body: JSON.stringify({ model, messages: history, stream: true, max_tokens: max, temperature: Number.isFinite(temp) ? temp : undefined }),
      });
      if (!res.ok) {
        failed = await errorText(res);
      } else {
        await readSSE(res, (ev) => {
          if (ev.data === '[DONE]') return true;
          let c;
          try { c = JSON.parse(ev.data); } catch (_) { failed = 'bad chunk: ' + ev.data.slice(0, 200); return true; }
          if (c.error) { failed = (c.error.code ? c.error.code + ': ' : '') + (c.error.message || 'error'); return true; }
          const ch = (c.choices || [])[0] || {};
          const piece = (ch.delta && ch.delta.content) || ch.text || '';
          if (piece) {
            text += piece;
            out.el.dataset.chunks = String(++chunks);
            out.body.textContent = text;
            $('chat-log').scrollTop = $('chat-log').scrollHeight;
          }
          if (ch.finish_reason) out.el.dataset.finish = ch.finish_reason;
          return false;
        });
      }
    } catch (err) {
      failed = err.name === 'AbortError' ? '' : String(err.message || err);
      if (err.name === 'AbortError') out.el.dataset.finish = 'stopped';
    } finally {
      chatAbort = null;
      $('chat-send').disabled = false;
      $('chat-stop').disabled = true;
    }
    if (failed) {
      out.el.classList.add('error');
      out.body.textContent = (text ? text + '\n' : '') + '⚠ ' + failed;
      out.el.dataset.state = 'error';
      if (!text) history.pop(); // the question had no answer: do not resend it
      else history.push({ role: 'assistant', content: text });
      return;
    }
    history.push({ role: 'assistant', content: text });
    out.el.dataset.state = 'done';
  });
  $('chat-stop').addEventListener('click', () => { if (chatAbort) chatAbort.abort(); });
  $('chat-clear').addEventListener('click', () => {
    if (chatAbort) chatAbort.abort();
    history = [];
    $('chat-log').replaceChildren();
  });
  $('chat-prompt').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) $('chat-form').requestSubmit();
  });

  // ---- job actions --------------------------------------------------------

  // jobCard is the live view of one job this page started.
  function jobCard(title) {
    const status = h('span', { class: 'pill warn' }, 'submitting');
    const bar = h('progress', { max: 1, value: 0 });
    const pct = h('span', null, '');
    const barRow = h('div', { class: 'bar', hidden: true }, bar, pct);
    const events = h('ul', { class: 'events' });
    const result = h('pre', { class: 'result', hidden: true });
    const el = h('article', { class: 'card job', dataset: { status: 'submitting' } },
      h('div', { class: 'title' }, h('span', null, title), status), barRow, events, result);
    const log = $('actions-log');
    log.prepend(el);
    while (log.children.length > MAX_JOB_CARDS) log.lastChild.remove();
    const line = (text, cls) => { events.append(h('li', { class: cls }, text)); events.scrollTop = events.scrollHeight; };
    const setStatus = (s) => { el.dataset.status = s; status.textContent = s; status.className = 'pill ' + (s === 'ok' ? 'ok' : s === 'failed' ? 'bad' : 'warn'); };
    return {
      id(id) { el.dataset.job = id; setStatus('running'); },
      fail(msg) { line(msg, 'error'); setStatus('failed'); },
      event(e) {
        switch (e.type) {
          case 'narration': line((e.node ? '[' + e.node + '] ' : '') + (e.actor ? e.actor + ': ' : '') + e.message); break;
          case 'progress':
            barRow.hidden = false;
            if (e.total) { bar.max = e.total; bar.value = e.done || 0; pct.textContent = Math.floor(100 * (e.done || 0) / e.total) + '%' + (e.unit === 'bytes' ? ' of ' + fmtBytes(e.total) : ''); }
            else { bar.removeAttribute('value'); pct.textContent = String(e.done || 0) + (e.unit ? ' ' + e.unit : ''); }
            break;
          case 'token': line(e.text); break;
          case 'result': result.hidden = false; result.textContent = JSON.stringify(e.result, null, 1); break;
          case 'error': line((e.code ? e.code + ': ' : '') + e.message, 'error'); break;
          case 'done': setStatus(e.status || 'ok'); break;
        }
      },
    };
  }

  // runJob submits a job and follows its events until done, resuming
  // after the last seen event when the stream breaks.
  async function runJob(req, title) {
    const card = jobCard(title);
    let sub;
    for (;;) {
      try {
        const res = await api('/v1/jobs', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(req) });
        if (res.status !== 202) { card.fail(await errorText(res)); return; }
        sub = await res.json();
        break;
      } catch (e) {
        if (e instanceof AuthError) { await tokenReady(); continue; }
        card.fail('submit: ' + (e.message || e));
        return;
      }
    }
    card.id(sub.job_id);
    let after = 0, tries = 0, finished = false;
    while (!finished) {
      try {
        const res = await api(sub.events_url + (after ? '?after=' + after : ''), { headers: { Accept: 'text/event-stream' } });
        if (!res.ok) throw new Error(await errorText(res));
        await readSSE(res, (ev) => {
          const e = JSON.parse(ev.data);
          after = e.seq || after;
          tries = 0;
          card.event(e);
          if (e.type === 'done') { finished = true; return true; }
          return false;
        });
        if (finished) return;
        throw new Error('the event stream ended before the job did');
      } catch (e) {
        if (e instanceof AuthError) { await tokenReady(); continue; }
        if (++tries > 5) { card.fail('lost the job: ' + (e.message || e)); return; }
        await sleep(Math.min(BACKOFF_MIN * 2 ** tries, BACKOFF_MAX));
      }
    }
  }

  function retire(w) {
    if (!confirm('Retire worker ' + w.id + ' (' + w.model + ' on ' + w.node + ')? It finishes its in-flight requests, then stops.')) return;
    runJob({ operation: 'active_worker_retire', worker_id: w.id }, 'retire ' + w.id);
  }

  $('spawn-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const req = { operation: 'worker_spawn', hive: $('spawn-hive').value, model: $('spawn-model').value.trim() };
    const dev = $('spawn-device').value.trim();
    if (dev) req.device = dev;
    if (!req.hive || !req.model) return;
    runJob(req, 'spawn ' + req.model + ' on ' + req.hive);
  });
  $('download-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const req = { operation: 'model_download', hive: $('download-hive').value, model: $('download-model').value.trim() };
    if (!req.hive || !req.model) return;
    runJob(req, 'download ' + req.model + ' to ' + req.hive);
  });

  feed(); // its first snapshot loads the chat's models
})();
