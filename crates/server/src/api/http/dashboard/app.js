// keel dashboard: a single page over the admin API (/api/v1/...), /metrics
// and etcd's JSON gateway (/v3/watch). Vanilla JS, no build step.
//
// Everything that comes from the server (keys, values, names, URLs, error
// messages) reaches the page through text nodes, textContent or
// setAttribute only; this file never parses HTML.
//
// Hooks for tests: cluster rows carry data-member-name, data-member-id and
// data-role; the leader's name is in #leader-name; every key listed by the
// key browser is an element of class "key-entry" whose textContent is the
// key; body[data-page] names the page shown and body[data-ready="1"] is set
// once it has rendered the server's data.
//
// With auth on, the admin API answers 401 until root logs in: a login form
// (#login) asks for a name and password, POST /v3/auth/authenticate gives a
// token, kept in sessionStorage and sent in the Authorization header.
(function () {
  'use strict';

  var POLL_MS = 2000;
  var KEYS_PAGE = 200;
  var WATCH_MAX_ROWS = 1000;
  var METRIC_SAMPLES = 90;
  var VALUE_SHOW_MAX = 256 * 1024;

  // ------------------------------------------------------------------
  // DOM helpers: elements are built from text, never from HTML.

  var SVG_NS = 'http://www.w3.org/2000/svg';

  function append(node, children) {
    for (var i = 0; i < children.length; i++) {
      var c = children[i];
      if (c === null || c === undefined || c === false) continue;
      if (Array.isArray(c)) { append(node, c); continue; }
      if (typeof c === 'string' || typeof c === 'number') {
        node.appendChild(document.createTextNode(String(c)));
      } else {
        node.appendChild(c);
      }
    }
    return node;
  }

  function setProps(el, props) {
    if (!props) return el;
    Object.keys(props).forEach(function (name) {
      var v = props[name];
      if (v === null || v === undefined || v === false) return;
      if (name === 'class') {
        el.setAttribute('class', String(v));
      } else if (name === 'dataset') {
        Object.keys(v).forEach(function (d) { el.dataset[d] = String(v[d]); });
      } else if (name.slice(0, 2) === 'on' && typeof v === 'function') {
        el.addEventListener(name.slice(2), v);
      } else if (name === 'value' || name === 'checked' || name === 'disabled') {
        el[name] = v;
      } else {
        el.setAttribute(name, v === true ? '' : String(v));
      }
    });
    return el;
  }

  // h('div.a.b#id', {props}, children...)
  function h(spec, props) {
    var m = /^([a-z0-9]+)((?:[.#][\w-]+)*)$/i.exec(spec);
    var el = document.createElement(m ? m[1] : 'div');
    if (m && m[2]) {
      var classes = [];
      m[2].replace(/([.#])([\w-]+)/g, function (_, kind, name) {
        if (kind === '.') classes.push(name); else el.id = name;
        return '';
      });
      if (classes.length) el.className = classes.join(' ');
    }
    if (props && props['class']) {
      props = Object.assign({}, props, {
        'class': ((el.className ? el.className + ' ' : '') + props['class'])
      });
    }
    setProps(el, props);
    append(el, Array.prototype.slice.call(arguments, 2));
    return el;
  }

  function s(tag, attrs) {
    var el = document.createElementNS(SVG_NS, tag);
    if (attrs) Object.keys(attrs).forEach(function (a) { el.setAttribute(a, String(attrs[a])); });
    append(el, Array.prototype.slice.call(arguments, 2));
    return el;
  }

  // Replaces el's children (strings become text nodes; arrays are flattened;
  // null, undefined and false are skipped).
  function fill(el) {
    el.replaceChildren();
    return append(el, Array.prototype.slice.call(arguments, 1));
  }

  function $(sel, root) { return (root || document).querySelector(sel); }

  function setText(el, text) { if (el) el.textContent = text === null || text === undefined ? '' : String(text); }

  // ------------------------------------------------------------------
  // Bytes: keys and values are bytes, base64 in JSON, percent-encoded in URLs.

  var utf8 = new TextEncoder();
  var strictUtf8 = new TextDecoder('utf-8', { fatal: true });

  function b64ToBytes(b64) {
    if (!b64) return new Uint8Array(0);
    var bin = atob(b64);
    var out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  function bytesToB64(bytes) {
    var bin = '';
    for (var i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]);
    return btoa(bin);
  }

  // The bytes as a string, or null when they are not valid UTF-8.
  function asUtf8(bytes) {
    try { return strictUtf8.decode(bytes); } catch (e) { return null; }
  }

  function hex2(b) { return (b < 16 ? '0' : '') + b.toString(16); }

  // A key (or any short byte string) as a person reads it: the text when it
  // is valid UTF-8 (control characters shown as \xNN), otherwise printable
  // ASCII with every other byte as \xNN.
  function keyText(bytes) {
    var text = asUtf8(bytes);
    if (text !== null) {
      return text.replace(/[\u0000-\u001f\u007f]/g, function (c) { return '\\x' + hex2(c.charCodeAt(0)); });
    }
    var out = '';
    for (var i = 0; i < bytes.length; i++) {
      var b = bytes[i];
      out += b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '\\x' + hex2(b);
    }
    return out;
  }

  function isBinaryKey(bytes) { return asUtf8(bytes) === null; }

  // Percent-encoding of bytes, for query strings (ours and the hash's).
  function pctEncode(bytes) {
    if (typeof bytes === 'string') bytes = utf8.encode(bytes);
    var out = '';
    for (var i = 0; i < bytes.length; i++) {
      var b = bytes[i];
      var unreserved = (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) ||
        b === 0x2d || b === 0x2e || b === 0x5f || b === 0x7e;
      out += unreserved ? String.fromCharCode(b) : '%' + hex2(b).toUpperCase();
    }
    return out;
  }

  // The inverse: %XX is a byte, '+' a space (as the server reads queries),
  // any other character its UTF-8 bytes.
  function pctDecode(text) {
    var out = [];
    for (var i = 0; i < text.length; i++) {
      var c = text[i];
      if (c === '%' && /^[0-9a-fA-F]{2}$/.test(text.substr(i + 1, 2))) {
        out.push(parseInt(text.substr(i + 1, 2), 16));
        i += 2;
      } else if (c === '+') {
        out.push(0x20);
      } else {
        var cp = text.codePointAt(i);
        if (cp > 0xffff) i++;
        var enc = utf8.encode(String.fromCodePoint(cp));
        for (var j = 0; j < enc.length; j++) out.push(enc[j]);
      }
    }
    return new Uint8Array(out);
  }

  function bytesEqual(a, b) {
    if (a.length !== b.length) return false;
    for (var i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
    return true;
  }

  function concatBytes(a, b) {
    var out = new Uint8Array(a.length + b.length);
    out.set(a, 0);
    out.set(b, a.length);
    return out;
  }

  // What a person typed as a key or prefix: UTF-8, with \xNN for any byte
  // (as keyText shows bytes that are not text).
  function inputBytes(text) {
    var out = [];
    var parts = text.split(/(\\x[0-9a-fA-F]{2})/);
    parts.forEach(function (part, i) {
      if (i % 2 === 1) { out.push(parseInt(part.slice(2), 16)); return; }
      var enc = utf8.encode(part);
      for (var j = 0; j < enc.length; j++) out.push(enc[j]);
    });
    return new Uint8Array(out);
  }

  // etcd's range_end for "every key starting with prefix"; null when the
  // prefix is empty (every key).
  function prefixEnd(prefix) {
    var end = Array.prototype.slice.call(prefix);
    while (end.length && end[end.length - 1] === 0xff) end.pop();
    if (!end.length) return null;
    end[end.length - 1]++;
    return new Uint8Array(end);
  }

  function hexDump(bytes) {
    var lines = [];
    for (var off = 0; off < bytes.length; off += 16) {
      var hexs = [];
      var ascii = '';
      for (var i = 0; i < 16; i++) {
        if (off + i < bytes.length) {
          var b = bytes[off + i];
          hexs.push(hex2(b));
          ascii += b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '.';
        } else {
          hexs.push('  ');
        }
      }
      var o = off.toString(16);
      lines.push('00000000'.slice(o.length) + o + '  ' + hexs.slice(0, 8).join(' ') + '  ' +
        hexs.slice(8).join(' ') + '  |' + ascii + '|');
    }
    return lines.join('\n');
  }

  function hexInline(bytes, max) {
    var parts = [];
    for (var i = 0; i < bytes.length && i < max; i++) parts.push(hex2(bytes[i]));
    return parts.join(' ') + (bytes.length > max ? ' …' : '');
  }

  // A short one-line preview of a value.
  // Bytes best shown as hex: not UTF-8, or holding control characters
  // other than tab, newline and carriage return.
  function looksBinary(bytes) {
    var text = asUtf8(bytes);
    return text === null || /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/.test(text);
  }

  function preview(bytes, max) {
    max = max || 80;
    var text = asUtf8(bytes);
    if (looksBinary(bytes)) return { text: hexInline(bytes, Math.floor(max / 3)), binary: true };
    text = text.replace(/\s+/g, ' ');
    return { text: text.length > max ? text.slice(0, max) + '…' : text, binary: false };
  }

  // ------------------------------------------------------------------
  // Formatting.

  function dash(v) { return v === null || v === undefined; }

  function fmtNum(v) {
    if (dash(v)) return '—';
    if (typeof v !== 'number') return String(v);
    return v.toLocaleString('en-US');
  }

  function fmtBytes(n) {
    if (dash(n)) return '—';
    var units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    var u = 0;
    var v = Number(n);
    while (Math.abs(v) >= 1024 && u < units.length - 1) { v /= 1024; u++; }
    return (u === 0 ? String(Math.round(v)) : v.toFixed(v < 10 ? 2 : 1)) + ' ' + units[u];
  }

  function fmtSeconds(sec) {
    if (dash(sec)) return '—';
    if (sec < 0) return 'expired';
    if (sec < 120) return sec + ' s';
    if (sec < 7200) return Math.floor(sec / 60) + ' min' + (sec % 60 ? ' ' + (sec % 60) + ' s' : '');
    return Math.floor(sec / 3600) + ' h ' + Math.floor((sec % 3600) / 60) + ' min';
  }

  function fmtSmart(v, digits) {
    if (dash(v) || !isFinite(v)) return '—';
    var a = Math.abs(v);
    if (a === 0) return '0';
    if (a >= 1e6) return (v / 1e6).toFixed(2) + 'M';
    if (a >= 1e4) return (v / 1e3).toFixed(1) + 'k';
    if (a >= 100) return v.toFixed(0);
    if (a >= 1) return v.toFixed(digits === undefined ? 1 : digits);
    return v.toPrecision(2);
  }

  function clock(d) {
    d = d || new Date();
    function p(n) { return (n < 10 ? '0' : '') + n; }
    return p(d.getHours()) + ':' + p(d.getMinutes()) + ':' + p(d.getSeconds());
  }

  // ------------------------------------------------------------------
  // Talking to the server.

  var connLeader = null;   // from /health: true, false or unknown (null)

  function setConn(ok, why) {
    var el = $('#conn');
    if (!el) return;
    var state = !ok ? 'down' : connLeader === false ? 'noleader' : 'ok';
    el.dataset.state = state;
    setText(el, state === 'down' ? 'unreachable' : state === 'noleader' ? 'connected · no leader' : 'connected');
    el.setAttribute('title', !ok ? (why || 'no answer') : state === 'noleader'
      ? 'this member answers but knows no leader (or an alarm is raised)' : 'this member answers');
  }

  // The header's connection state, from GET /health every few seconds
  // (etcd's: 200 {"health":"true"} with a leader and no alarm, else 503).
  function watchHealth() {
    function tick() {
      request('/health', { headers: { accept: 'application/json' } }).then(function (res) {
        connLeader = res.ok;
        setConn(true);
        return res.text();
      }, function () { /* request() marked it down */ }).then(function () {
        setTimeout(tick, 5000);
      });
    }
    tick();
  }

  function ApiError(message, status, slug) {
    var e = new Error(message);
    e.status = status;
    e.slug = slug;
    return e;
  }

  function describe(err) {
    if (!err) return 'unknown error';
    var head = err.status ? 'HTTP ' + err.status + (err.slug ? ' ' + err.slug : '') + ': ' : '';
    return head + (err.message || String(err));
  }

  var TOKEN_KEY = 'keel-token';

  function token() {
    try { return sessionStorage.getItem(TOKEN_KEY); } catch (e) { return null; }
  }

  function setToken(value) {
    try {
      if (value) sessionStorage.setItem(TOKEN_KEY, value); else sessionStorage.removeItem(TOKEN_KEY);
    } catch (e) { /* storage off: the token lives until the page is left */ }
  }

  // The login form, shown over the page when the server wants a token.
  function showLogin(why) {
    if ($('#login')) return;
    var name = h('input', { name: 'name', autocomplete: 'username', required: true, value: 'root' });
    var password = h('input', { name: 'password', type: 'password', autocomplete: 'current-password', required: true });
    var message = h('p.login-error', { role: 'alert' }, why || '');
    var form = h('form.login-form', null,
      h('h2', null, 'Log in'),
      h('p', null, 'Auth is enabled on this cluster: log in as root.'),
      h('label', null, 'User', name),
      h('label', null, 'Password', password),
      message,
      h('button', { type: 'submit' }, 'Log in'));
    form.addEventListener('submit', function (ev) {
      ev.preventDefault();
      setText(message, '');
      fetch('/v3/auth/authenticate', {
        method: 'POST',
        cache: 'no-store',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ name: name.value, password: password.value })
      }).then(function (res) {
        return res.text().then(function (text) {
          var body = null;
          try { body = JSON.parse(text); } catch (e) { /* not JSON */ }
          if (!res.ok || !body || !body.token) {
            throw new Error(body && body.message ? body.message : 'login failed (HTTP ' + res.status + ')');
          }
          setToken(body.token);
          window.location.reload();
        });
      }).catch(function (e) { setText(message, e.message || String(e)); });
    });
    document.body.appendChild(h('div.login#login', { role: 'dialog', 'aria-modal': 'true' }, form));
    password.focus();
  }

  function request(path, opts) {
    opts = Object.assign({ cache: 'no-store', credentials: 'same-origin' }, opts || {});
    var t = token();
    if (t) opts.headers = Object.assign({}, opts.headers || {}, { authorization: t });
    return fetch(path, opts).then(function (res) {
      setConn(true);
      if (res.status === 401) {
        // No token, or one that expired or was voided: log in (again).
        if (t) setToken(null);
        showLogin(t ? 'Your session ended; log in again.' : '');
      }
      return res;
    }, function (e) {
      if (e && e.name === 'AbortError') throw e;
      setConn(false, e && e.message);
      throw ApiError('cannot reach the server (' + (e && e.message ? e.message : e) + ')');
    });
  }

  function errorFrom(res, text) {
    var body = null;
    try { body = JSON.parse(text); } catch (e) { /* not JSON */ }
    var msg = body && typeof body.message === 'string' && body.message ? body.message
      : (text && text.length < 300 ? text.trim() : res.statusText);
    return ApiError(msg || 'request failed', res.status, body && typeof body.error === 'string' ? body.error : null);
  }

  function api(path, opts) {
    return request(path, Object.assign({ headers: { accept: 'application/json' } }, opts || {}))
      .then(function (res) {
        return res.text().then(function (text) {
          if (!res.ok) throw errorFrom(res, text);
          if (!text) return null;
          try { return JSON.parse(text); } catch (e) { throw ApiError('the server did not answer JSON', res.status); }
        });
      });
  }

  function postJson(path, body, method) {
    return api(path, {
      method: method || 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body)
    });
  }

  function fetchText(path, opts) {
    return request(path, opts).then(function (res) {
      return res.text().then(function (text) {
        if (!res.ok) throw errorFrom(res, text);
        return text;
      });
    });
  }

  // ------------------------------------------------------------------
  // Page life cycle: every page gets a context whose timers and requests
  // end when the page is left.

  function makeCtx() {
    var ctx = { alive: true, timers: [], controllers: [], cleanups: [] };
    ctx.later = function (fn, ms) {
      var t = setTimeout(function () {
        ctx.timers = ctx.timers.filter(function (x) { return x !== t; });
        if (ctx.alive) fn();
      }, ms);
      ctx.timers.push(t);
      return t;
    };
    ctx.controller = function () {
      var c = new AbortController();
      ctx.controllers.push(c);
      return c;
    };
    ctx.onDispose = function (fn) { ctx.cleanups.push(fn); };
    // Runs fn now and again ms after each run ends; kick() runs it at once.
    ctx.poll = function (fn, ms) {
      var timer = null;
      var running = false;
      var again = false;
      function tick() {
        timer = null;
        if (!ctx.alive) return;
        if (running) { again = true; return; }
        running = true;
        Promise.resolve().then(fn).catch(function () { /* fn shows its errors */ }).then(function () {
          running = false;
          if (!ctx.alive) return;
          if (again) { again = false; tick(); return; }
          timer = ctx.later(tick, ms);
        });
      }
      tick();
      return {
        kick: function () {
          if (timer !== null) { clearTimeout(timer); timer = null; }
          tick();
        }
      };
    };
    ctx.ready = function () { if (ctx.alive) document.body.dataset.ready = '1'; };
    ctx.dispose = function () {
      ctx.alive = false;
      ctx.timers.forEach(clearTimeout);
      ctx.controllers.forEach(function (c) { try { c.abort(); } catch (e) { /* ignore */ } });
      ctx.cleanups.forEach(function (fn) { try { fn(); } catch (e) { /* ignore */ } });
    };
    return ctx;
  }

  // ------------------------------------------------------------------
  // Routing: #/page?name=percent-encoded&...

  function parseHash() {
    var raw = location.hash.replace(/^#\/?/, '');
    var q = raw.indexOf('?');
    var path = q < 0 ? raw : raw.slice(0, q);
    var query = q < 0 ? '' : raw.slice(q + 1);
    var params = {};
    query.split('&').forEach(function (part) {
      if (!part) return;
      var i = part.indexOf('=');
      var name = asUtf8(pctDecode(i < 0 ? part : part.slice(0, i))) || '';
      params[name] = i < 0 ? '' : part.slice(i + 1);
    });
    return { route: path.split('/')[0] || 'cluster', params: params };
  }

  function paramBytes(params, name) {
    return Object.prototype.hasOwnProperty.call(params, name) ? pctDecode(params[name]) : null;
  }

  function paramText(params, name) {
    var b = paramBytes(params, name);
    return b === null ? null : (asUtf8(b) || keyText(b));
  }

  function hashFor(route, params) {
    var parts = [];
    Object.keys(params || {}).forEach(function (name) {
      var v = params[name];
      if (v === null || v === undefined || v === false) return;
      parts.push(pctEncode(name) + '=' + (v === true ? '1' : pctEncode(v)));
    });
    return '#/' + route + (parts.length ? '?' + parts.join('&') : '');
  }

  var PAGES = {};
  var current = null;

  function route() {
    var parsed = parseHash();
    var name = Object.prototype.hasOwnProperty.call(PAGES, parsed.route) ? parsed.route : 'cluster';
    if (current && current.name === name && current.inst && current.inst.update &&
        current.inst.update(parsed.params) === true) {
      return;
    }
    if (current) current.ctx.dispose();
    document.body.dataset.page = name;
    document.body.dataset.ready = '0';
    Array.prototype.forEach.call(document.querySelectorAll('#nav a'), function (a) {
      if (a.dataset.route === name) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    });
    var view = $('#view');
    fill(view);
    var ctx = makeCtx();
    current = { name: name, ctx: ctx, inst: null };
    current.inst = PAGES[name](view, parsed.params, ctx) || {};
    var title = { cluster: 'Cluster', keys: 'Keys', watch: 'Watch', leases: 'Leases', metrics: 'Metrics' }[name];
    document.title = title + ' · keel';
  }

  // ------------------------------------------------------------------
  // Shared bits of pages.

  function flash(kind, text) {
    var area = $('#flash');
    var close = h('button.flash-close', { type: 'button', 'aria-label': 'dismiss' }, '×');
    var el = h('div.flash.flash-' + kind, null, h('span', null, text), close);
    close.addEventListener('click', function () { el.remove(); });
    area.appendChild(el);
    setTimeout(function () { el.remove(); }, kind === 'error' ? 12000 : 5000);
  }

  function pageHead(title, sub, actions) {
    return h('div.page-head', null,
      h('div.page-title', null, h('h1', null, title), sub || null),
      actions && actions.length ? h('div.page-actions', null, actions) : null);
  }

  function errorBanner() {
    var el = h('div.banner.banner-error', { hidden: true, role: 'alert' });
    return {
      el: el,
      show: function (err, what) {
        fill(el, h('strong', null, what || 'Error'), ' ', describe(err));
        el.hidden = false;
      },
      hide: function () { el.hidden = true; fill(el); }
    };
  }

  function button(label, props, onclick) {
    var b = h('button.btn', Object.assign({ type: 'button' }, props || {}), label);
    if (onclick) b.addEventListener('click', onclick);
    return b;
  }

  function badge(kind, text) { return h('span.badge.badge-' + kind, null, text); }

  function emptyRow(cols, text) {
    return h('tr.empty-row', null, h('td', { colspan: cols }, text));
  }

  // An action on the server: disables the button meanwhile, flashes the
  // outcome.
  function act(btn, promise, okText, then) {
    if (btn) btn.disabled = true;
    return promise.then(function (res) {
      flash('ok', typeof okText === 'function' ? okText(res) : okText);
      if (then) then();
    }, function (err) {
      flash('error', describe(err));
    }).then(function () { if (btn) btn.disabled = false; });
  }

  function isHttpUrl(u) { return typeof u === 'string' && /^https?:\/\//i.test(u); }

  function keyLink(bytes) {
    return hashFor('keys', { prefix: '', key: bytes });
  }

  // ------------------------------------------------------------------
  // Cluster.

  PAGES.cluster = function (view, params, ctx) {
    var last = null;
    var sub = h('p.page-sub', null, 'loading…');
    var compactBtn = button('Compact…', { title: 'compact the history up to a revision' });
    var backup = h('a.btn', { href: '/api/v1/backup', download: '', title: 'the store as `etcdctl snapshot save` writes it' },
      'Download backup');
    var alarms = h('div.alarms');
    var banner = errorBanner();
    var leaderName = h('span#leader-name', { dataset: { none: '1' } }, '—');
    var leaderId = h('span.card-foot.mono', null, '');
    var membersVal = h('span.card-value', null, '—');
    var membersFoot = h('span.card-foot', null, '');
    var revisionVal = h('span.card-value', null, '—');
    var revisionFoot = h('span.card-foot', null, '');
    var termVal = h('span.card-value', null, '—');
    var termFoot = h('span.card-foot', null, '');
    var tbody = h('tbody');
    var updated = h('span.muted', null, '');

    var cols = ['Name', 'ID', 'Role', 'Term', 'Commit', 'Applied', 'Lag', 'DB size', 'Client URLs', 'Status', ''];
    view.append(
      pageHead('Cluster', sub, [backup, compactBtn]),
      alarms,
      banner.el,
      h('div.cards', null,
        h('div.card.card-leader', null, h('span.card-label', null, 'Leader'), h('span.card-value', null, leaderName), leaderId),
        h('div.card', null, h('span.card-label', null, 'Members'), membersVal, membersFoot),
        h('div.card', null, h('span.card-label', null, 'Revision'), revisionVal, revisionFoot),
        h('div.card', null, h('span.card-label', null, 'Raft term'), termVal, termFoot)),
      h('section.panel', null,
        h('div.panel-head', null, h('h2', null, 'Members'), updated),
        h('div.table-wrap', null,
          h('table.table.members', null,
            h('thead', null, h('tr', null, cols.map(function (c, i) {
              return h('th', { 'class': i >= 3 && i <= 7 ? 'num' : null }, c);
            }))),
            tbody))));

    var poller;

    compactBtn.addEventListener('click', function () {
      var rev = last ? maxRevision(last) : null;
      var answer = window.prompt(
        'Compact the key history up to which revision?\n' +
        'Older versions of keys will be gone for good (current revision: ' + (rev === null ? 'unknown' : rev) + ').',
        rev === null ? '' : String(rev));
      if (answer === null) return;
      answer = answer.trim();
      if (!/^[0-9]+$/.test(answer) || Number(answer) < 1) {
        flash('error', 'not a revision: ' + answer);
        return;
      }
      var n = Number(answer);
      act(compactBtn, postJson('/api/v1/compact', { revision: n, physical: false }),
        function (res) { return 'compacted up to revision ' + (res && res.compact_revision !== undefined ? res.compact_revision : n); },
        function () { poller.kick(); });
    });

    function maxRevision(data) {
      var best = null;
      (data.members || []).forEach(function (m) {
        if (typeof m.revision === 'number' && (best === null || m.revision > best)) best = m.revision;
      });
      return best;
    }

    function nameOf(data, id) {
      var m = (data.members || []).filter(function (x) { return x.id === id; })[0];
      return m ? (m.name || m.id) : id;
    }

    function actions(data, m) {
      var out = [];
      var label = m.name || m.id;
      if (m.role === 'follower' && !m.is_learner) {
        var lead = button('Make leader', { 'class': 'btn-sm', title: 'transfer leadership to ' + label });
        lead.addEventListener('click', function () {
          act(lead, postJson('/api/v1/cluster/leader', { member: m.id }),
            function (res) { return 'leadership moved to ' + nameOf(last || data, res && res.leader ? res.leader : m.id); },
            function () { poller.kick(); });
        });
        out.push(lead);
      }
      if (m.is_learner) {
        var promote = button('Promote', { 'class': 'btn-sm', title: 'make ' + label + ' a voting member' });
        promote.addEventListener('click', function () {
          act(promote, postJson('/api/v1/members/' + encodeURIComponent(m.id) + '/promote'),
            'promoted ' + label, function () { poller.kick(); });
        });
        out.push(promote);
      }
      var remove = button('Remove', { 'class': 'btn-sm btn-danger', title: 'remove ' + label + ' from the cluster' });
      remove.addEventListener('click', function () {
        if (!window.confirm('Remove member ' + label + ' (' + m.id + ') from the cluster?\n' +
          'It stops being part of the cluster at once.')) return;
        act(remove, postJson('/api/v1/members/' + encodeURIComponent(m.id), undefined, 'DELETE'),
          'removed ' + label, function () { poller.kick(); });
      });
      out.push(remove);
      return h('div.row-actions', null, out);
    }

    function roleBadge(m) {
      var role = m.role || 'unknown';
      return badge(role, role);
    }

    function urls(list) {
      return h('div.urls', null, (list || []).map(function (u) {
        return isHttpUrl(u)
          ? h('a.mono', { href: u, target: '_blank', rel: 'noopener noreferrer', title: 'open this member\'s dashboard' }, u)
          : h('span.mono', null, String(u));
      }));
    }

    function lagCell(m) {
      if (dash(m.lag)) return '—';
      return h('span', { 'class': m.lag > 1000 ? 'warn' : (m.lag > 0 ? 'muted-strong' : null) }, fmtNum(m.lag));
    }

    function render(data) {
      last = data;
      var members = (data.members || []).slice().sort(function (a, b) {
        var x = (a.name || '') + '\u0000' + a.id;
        var y = (b.name || '') + '\u0000' + b.id;
        return x < y ? -1 : x > y ? 1 : 0;
      });
      var leader = data.leader ? members.filter(function (m) { return m.id === data.leader; })[0] : null;
      if (!leader) leader = members.filter(function (m) { return m.role === 'leader'; })[0] || null;
      fill(sub,
        'cluster ', h('span.mono', null, data.cluster_id || '—'),
        ' · served by ', h('span', null, data.served_by ? nameOf(data, data.served_by) : '—'));
      if (leader) {
        setText(leaderName, leader.name || leader.id);
        delete leaderName.dataset.none;
        setText(leaderId, leader.id);
      } else {
        setText(leaderName, 'none');
        leaderName.dataset.none = '1';
        setText(leaderId, 'no leader: writes are refused');
      }
      var voters = members.filter(function (m) { return !m.is_learner; }).length;
      var reachable = members.filter(function (m) { return m.role !== 'unreachable'; }).length;
      setText(membersVal, members.length);
      setText(membersFoot, voters + ' voting · ' + (members.length - voters) + ' learner' +
        (members.length - voters === 1 ? '' : 's') + ' · ' + reachable + ' reachable');
      var rev = maxRevision(data);
      setText(revisionVal, fmtNum(rev));
      setText(revisionFoot, leader && !dash(leader.db_size) ? 'leader db ' + fmtBytes(leader.db_size) : '');
      setText(termVal, leader && !dash(leader.term) ? fmtNum(leader.term) : '—');
      setText(termFoot, leader && !dash(leader.commit) ? 'commit index ' + fmtNum(leader.commit) : '');

      var rows = members.map(function (m) {
        var isLeader = leader && m.id === leader.id;
        var status = m.error
          ? h('span.status.status-down', { title: String(m.error) }, h('span.dot'), h('span.status-text', null, String(m.error)))
          : h('span.status.status-ok', null, h('span.dot'), 'reachable');
        return h('tr', {
          'class': [isLeader ? 'row-leader' : '', m.role === 'unreachable' ? 'row-down' : ''].join(' ').trim() || null,
          'data-member-name': m.name || '',
          'data-member-id': m.id || '',
          'data-role': m.role || ''
        },
        h('td.name', null, m.name ? m.name : h('span.muted', null, '(unstarted)'), isLeader ? h('span.crown', { title: 'leader' }, '★') : null),
        h('td.mono', null, m.id || ''),
        h('td', null, roleBadge(m)),
        h('td.num', null, fmtNum(m.term)),
        h('td.num', null, fmtNum(m.commit)),
        h('td.num', null, fmtNum(m.applied)),
        h('td.num', null, lagCell(m)),
        h('td.num', { title: dash(m.revision) ? null : 'store revision ' + m.revision }, fmtBytes(m.db_size)),
        h('td', null, urls(m.client_urls)),
        h('td', null, status),
        h('td', null, actions(data, m)));
      });
      fill(tbody, rows.length ? rows : [emptyRow(cols.length, 'no members')]);
      setText(updated, 'updated ' + clock());
    }

    function renderAlarms(data) {
      var list = (data && data.alarms) || [];
      fill(alarms, list.map(function (a) {
        return h('div.banner.banner-alarm', { role: 'alert' },
          h('strong', null, 'Alarm ' + String(a.alarm)),
          ' raised by member ', h('span', null, last ? nameOf(last, a.member) : String(a.member)),
          ' ', h('span.mono.muted', null, '(' + String(a.member) + ')'),
          a.alarm === 'NOSPACE' ? ' — the store is out of space: writes are refused until it is compacted, defragmented and the alarm disarmed.' :
            a.alarm === 'CORRUPT' ? ' — a member\'s data differs from the others\'.' : '');
      }));
    }

    poller = ctx.poll(function () {
      var c = ctx.controller();
      return Promise.all([
        api('/api/v1/cluster', { signal: c.signal }),
        api('/api/v1/alarms', { signal: c.signal }).catch(function () { return null; })
      ]).then(function (res) {
        if (!ctx.alive) return;
        banner.hide();
        render(res[0] || {});
        renderAlarms(res[1]);
        ctx.ready();
      }, function (err) {
        if (!ctx.alive || (err && err.name === 'AbortError')) return;
        banner.show(err, 'Cannot load the cluster:');
      });
    }, POLL_MS);
  };

  // ------------------------------------------------------------------
  // Key browser.

  PAGES.keys = function (view, params, ctx) {
    var SLASH = 0x2f;
    var prefix = paramBytes(params, 'prefix') || new Uint8Array(0);
    var flat = paramBytes(params, 'flat') !== null && params.flat !== '0';
    var selected = paramBytes(params, 'key');
    if (selected && !selected.length) selected = null;

    var more = false;
    var count = null;
    var revision = null;
    var listReady = false;
    var detailReady = !selected;

    var sub = h('p.page-sub', null, 'loading…');
    var banner = errorBanner();
    var crumbs = h('nav.crumbs', { 'aria-label': 'prefix' });
    var prefixInput = h('input.input.mono', {
      type: 'text', placeholder: 'prefix, e.g. app/', spellcheck: 'false', autocomplete: 'off', title: 'UTF-8 text; \\xNN for any byte',
      'aria-label': 'prefix', value: keyText(prefix)
    });
    var flatBox = h('input', { type: 'checkbox', checked: flat });
    var refreshBtn = button('Refresh');
    var list = h('ul.key-list');
    var moreBtn = button('Load more', { hidden: true });
    var listFoot = h('div.list-foot', null, h('span.muted.list-count', null, ''), moreBtn);
    var detail = h('section.panel.detail');

    view.append(
      pageHead('Keys', sub, [refreshBtn]),
      h('form.toolbar', {
        onsubmit: function (ev) {
          ev.preventDefault();
          go({ prefix: inputBytes(prefixInput.value) });
        }
      }, crumbs,
      h('div.toolbar-right', null,
        prefixInput,
        h('button.btn.btn-primary', { type: 'submit' }, 'Go'),
        h('label.check', null, flatBox, ' flat list'))),
      banner.el,
      h('div.split', null,
        h('section.panel.list-panel', null, list, listFoot),
        detail));

    flatBox.addEventListener('change', function () { go({ flat: flatBox.checked }); });
    refreshBtn.addEventListener('click', function () { reload(); if (selected) showDetail(selected); });
    moreBtn.addEventListener('click', function () { loadPage(); });

    function go(change) {
      var next = {
        prefix: 'prefix' in change ? change.prefix : prefix,
        flat: 'flat' in change ? change.flat : flat,
        key: 'key' in change ? change.key : selected
      };
      location.hash = hashFor('keys', {
        prefix: next.prefix,
        flat: next.flat ? true : null,
        key: next.key && next.key.length ? next.key : null
      });
    }

    function hrefFor(p, key) {
      return hashFor('keys', { prefix: p, flat: flat ? true : null, key: key || null });
    }

    function renderCrumbs() {
      var items = [h('a.crumb', { href: hrefFor(new Uint8Array(0)) }, 'root')];
      var start = 0;
      for (var i = 0; i < prefix.length; i++) {
        if (prefix[i] === SLASH) {
          items.push(h('span.crumb-sep', null, '›'));
          items.push(h('a.crumb.mono', { href: hrefFor(prefix.slice(0, i + 1)) }, keyText(prefix.slice(start, i + 1))));
          start = i + 1;
        }
      }
      if (start < prefix.length) {
        items.push(h('span.crumb-sep', null, '›'));
        items.push(h('span.crumb.crumb-partial.mono', { title: 'keys starting with this' }, keyText(prefix.slice(start)) + '…'));
      }
      fill(crumbs, items);
    }

    function maybeReady() { if (listReady && detailReady) ctx.ready(); }

    // The folder (prefix + next segment + '/') a key is in, or null when
    // it is listed as a key here.
    function folderOf(bytes) {
      if (flat) return null;
      var slash = bytes.subarray(prefix.length).indexOf(SLASH);
      return slash < 0 ? null : bytes.slice(0, prefix.length + slash + 1);
    }

    function renderList() {
      var items = [];
      folders.forEach(function (f) {
        items.push(h('li.folder-row', null,
          h('a.folder-entry', { href: hrefFor(f.bytes), title: keyText(f.bytes) },
            h('span.icon-folder', { 'aria-hidden': 'true' }),
            h('span.mono', null, keyText(f.bytes.subarray(prefix.length)))),
          h('span.count', { title: 'keys in this folder' }, f.count === null ? '…' : fmtNum(f.count))));
      });
      var prefixText = keyText(prefix);
      keys.forEach(function (entry) {
        var full = keyText(entry.bytes);
        var label = prefixText && full.indexOf(prefixText) === 0 && full.length > prefixText.length
          ? [h('span.key-prefix', null, prefixText), full.slice(prefixText.length)]
          : [full];
        var isSel = selected && bytesEqual(selected, entry.bytes);
        var m = entry.meta;
        items.push(h('li.key-row', { 'class': isSel ? 'selected' : null },
          h('a.key-entry.mono', { href: hrefFor(prefix, entry.bytes), title: full }, label),
          h('span.key-meta', null,
            isBinaryKey(entry.bytes) ? badge('binary', 'binary') : null,
            m.lease && m.lease !== '0' ? badge('lease', 'lease') : null,
            h('span', { title: 'mod revision' }, 'rev ' + fmtNum(m.mod_revision)),
            dash(m.value_size) ? null : h('span', { title: 'value size' }, fmtBytes(m.value_size)))));
      });
      if (!items.length) {
        items.push(h('li.empty', null, prefix.length ? 'No keys start with this prefix.' : 'The store has no keys.'));
      }
      fill(list, items);
      moreBtn.hidden = !more;
      var parts = [];
      if (folders.length) parts.push(fmtNum(folders.length) + ' folder' + (folders.length === 1 ? '' : 's'));
      if (keys.length || !folders.length) parts.push(fmtNum(keys.length) + ' key' + (keys.length === 1 ? '' : 's'));
      setText($('.list-count', listFoot), (folders.length || keys.length ? parts.join(' · ') : '') + (more ? ' so far' : ''));
      fill(sub,
        count === null ? '' : fmtNum(count) + ' key' + (count === 1 ? '' : 's') + ' ',
        prefix.length ? ['under ', h('span.mono', null, prefixText), ' '] : 'in all ',
        revision === null ? '' : '· revision ' + fmtNum(revision));
    }

    var generation = 0;
    var folders = [];         // {bytes, count}
    var folderSeen = {};
    var keys = [];            // {bytes, meta}
    var cursor = null;        // list strictly after this key next
    // Past every key of a folder (unless a key there goes on with sixteen
    // 0xff bytes, which would only be seen again).
    var SKIP = new Uint8Array(16).fill(0xff);

    function countFolder(f, gen) {
      var c = ctx.controller();
      return api('/api/v1/keys?limit=1&prefix=' + pctEncode(f.bytes), { signal: c.signal }).then(function (res) {
        if (!ctx.alive || gen !== generation) return;
        f.count = typeof res.count === 'number' ? res.count : null;
        renderList();
      }, function () { /* the count stays unknown */ });
    }

    // Lists the next page: in folders mode, once a page ends inside a
    // folder the rest of that folder is skipped, so that one big folder
    // does not hide what comes after it.
    function loadPage() {
      var gen = generation;
      var added = 0;
      var rounds = 0;
      var newFolders = [];
      moreBtn.disabled = true;
      function step() {
        var q = '/api/v1/keys?limit=' + KEYS_PAGE + '&prefix=' + pctEncode(prefix);
        if (cursor) q += '&after=' + pctEncode(cursor);
        var c = ctx.controller();
        return api(q, { signal: c.signal }).then(function (res) {
          if (!ctx.alive || gen !== generation) return;
          banner.hide();
          rounds++;
          var page = res.keys || [];
          var lastFolder = null;
          page.forEach(function (k) {
            var bytes = b64ToBytes(k.key);
            var f = folderOf(bytes);
            lastFolder = f;
            if (f) {
              var id = bytesToB64(f);
              if (!folderSeen[id]) {
                folderSeen[id] = { bytes: f, count: null };
                folders.push(folderSeen[id]);
                newFolders.push(folderSeen[id]);
                added++;
              }
            } else {
              keys.push({ bytes: bytes, meta: k });
              added++;
            }
          });
          more = !!res.more && page.length > 0;
          count = typeof res.count === 'number' ? res.count : null;
          revision = typeof res.revision === 'number' ? res.revision : revision;
          if (page.length) {
            var last = b64ToBytes(page[page.length - 1].key);
            cursor = lastFolder && more ? concatBytes(lastFolder, SKIP) : last;
          }
          if (more && lastFolder && added < KEYS_PAGE / 4 && rounds < 20) return step();
          renderList();
          newFolders.forEach(function (f) { countFolder(f, gen); });
          listReady = true;
          maybeReady();
        });
      }
      return step().catch(function (err) {
        if (!ctx.alive || (err && err.name === 'AbortError')) return;
        banner.show(err, 'Cannot list keys:');
      }).then(function () { moreBtn.disabled = false; });
    }

    function reload() {
      generation++;
      folders = [];
      folderSeen = {};
      keys = [];
      cursor = null;
      more = false;
      return loadPage();
    }

    // ---- one key: value, metadata, history

    var detailGen = 0;

    function showEmptyDetail() {
      detail.classList.add('detail-empty');
      fill(detail, h('div.placeholder', null,
        h('p', null, 'Select a key to see its value, metadata and history.')));
    }

    function valueViewer(title) {
      var mode = 'text';
      var bytes = new Uint8Array(0);
      var textBtn = h('button.seg', { type: 'button' }, 'Text');
      var hexBtn = h('button.seg', { type: 'button' }, 'Hex');
      var info = h('span.muted', null, '');
      var label = h('span.value-label', null, title);
      var pre = h('pre.value');
      function draw() {
        var text = asUtf8(bytes);
        textBtn.disabled = text === null;
        textBtn.title = text === null ? 'not valid UTF-8' : '';
        textBtn.classList.toggle('on', mode === 'text');
        hexBtn.classList.toggle('on', mode === 'hex');
        var shown = bytes.length > VALUE_SHOW_MAX ? bytes.subarray(0, VALUE_SHOW_MAX) : bytes;
        var body = mode === 'text' ? (asUtf8(shown) !== null ? asUtf8(shown) : new TextDecoder().decode(shown)) : hexDump(shown);
        pre.classList.toggle('hex', mode === 'hex');
        pre.classList.toggle('is-empty', bytes.length === 0);
        setText(pre, bytes.length === 0 ? '(empty value)' : body);
        setText(info, fmtBytes(bytes.length) + (text === null ? ' · binary' : looksBinary(bytes) ? ' · UTF-8, control characters' : ' · UTF-8') +
          (bytes.length > VALUE_SHOW_MAX ? ' · first ' + fmtBytes(VALUE_SHOW_MAX) + ' shown' : ''));
      }
      textBtn.addEventListener('click', function () { mode = 'text'; draw(); });
      hexBtn.addEventListener('click', function () { mode = 'hex'; draw(); });
      return {
        el: h('div.value-box', null,
          h('div.value-head', null, label, info, h('div.seg-group', { role: 'group', 'aria-label': 'show as' }, textBtn, hexBtn)),
          pre),
        set: function (b, t) {
          bytes = b;
          if (t !== undefined) fill(label, t);
          mode = looksBinary(b) ? 'hex' : 'text';
          draw();
        }
      };
    }

    function metaList(pairs) {
      var dl = h('dl.meta');
      pairs.forEach(function (p) { dl.appendChild(h('div', null, h('dt', null, p[0]), h('dd', null, p[1]))); });
      return dl;
    }

    function showDetail(key) {
      var gen = ++detailGen;
      detail.classList.remove('detail-empty');
      var keyStr = keyText(key);
      var closeLink = h('a.btn.btn-sm.btn-ghost', { href: hrefFor(prefix, null), title: 'close' }, 'Close');
      var viewer = valueViewer('Value');
      var metaBox = h('div.meta-box', null, h('p.muted', null, 'loading…'));
      var histBody = h('tbody', null, emptyRow(6, 'loading…'));
      var histNote = h('span.muted', null, '');
      var err = errorBanner();
      var valueWrap = h('div', null, viewer.el);
      fill(detail,
        h('div.detail-head', null,
          h('div.detail-key', null,
            h('span.card-label', null, isBinaryKey(key) ? 'Key (binary)' : 'Key'),
            h('h2.key-title.mono', { title: keyStr }, keyStr)),
          closeLink),
        err.el,
        valueWrap,
        metaBox,
        h('div.history', null,
          h('div.panel-head', null, h('h3', null, 'History'), histNote),
          h('div.table-wrap', null,
            h('table.table.table-compact', null,
              h('thead', null, h('tr', null,
                h('th', null, 'Type'), h('th.num', null, 'Mod rev'), h('th.num', null, 'Create rev'),
                h('th.num', null, 'Version'), h('th', null, 'Value'), h('th', null, ''))),
              histBody))));

      var currentValue = null;
      var c = ctx.controller();
      var one = api('/api/v1/key?key=' + pctEncode(key), { signal: c.signal }).then(function (res) {
        if (gen !== detailGen || !ctx.alive) return;
        var kv = (res && res.kv) || {};
        currentValue = b64ToBytes(kv.value);
        viewer.set(currentValue, 'Value');
        fill(metaBox, metaList([
          ['Create revision', fmtNum(kv.create_revision)],
          ['Mod revision', fmtNum(kv.mod_revision)],
          ['Version', fmtNum(kv.version)],
          ['Lease', kv.lease && kv.lease !== '0'
            ? h('a.mono', { href: '#/leases', title: 'see leases' }, String(kv.lease)) : 'none'],
          ['Value size', fmtBytes(currentValue.length)],
          ['Read at revision', fmtNum(res.revision)]
        ]));
      }, function (e) {
        if (gen !== detailGen || !ctx.alive || (e && e.name === 'AbortError')) return;
        if (e.status === 404) {
          fill(valueWrap, h('div.banner.banner-info', null, 'This key does not exist (any more). Its history, if kept, is below.'));
          fill(metaBox);
        } else {
          err.show(e, 'Cannot read the key:');
          fill(metaBox);
        }
      });
      var hist = api('/api/v1/key/history?limit=100&key=' + pctEncode(key), { signal: c.signal }).then(function (res) {
        if (gen !== detailGen || !ctx.alive) return;
        var changes = (res && res.changes) || [];
        setText(histNote, (changes.length ? changes.length + ' change' + (changes.length === 1 ? '' : 's') + ', newest first' : '') +
          (res && res.compact_revision ? ' · compacted before revision ' + fmtNum(res.compact_revision) : ''));
        var rows = changes.map(function (ch) {
          var type = ch.type || 'PUT';
          var vb = b64ToBytes(ch.value);
          var pv = preview(vb, 60);
          var showBtn = null;
          if (type !== 'DELETE') {
            showBtn = button('Show', { 'class': 'btn-sm btn-ghost', title: 'show this version\'s value above' });
            showBtn.addEventListener('click', function () {
              if (!valueWrap.contains(viewer.el)) fill(valueWrap, viewer.el);
              viewer.set(vb, ['Value at revision ' + fmtNum(ch.mod_revision) + ' ',
                currentValue ? h('a.link', { href: '#', onclick: function (ev) { ev.preventDefault(); viewer.set(currentValue, 'Value'); } }, '(back to current)') : null]);
            });
          }
          return h('tr', null,
            h('td', null, badge(type === 'DELETE' ? 'delete' : 'put', type)),
            h('td.num', null, fmtNum(ch.mod_revision)),
            h('td.num', null, fmtNum(ch.create_revision)),
            h('td.num', null, fmtNum(ch.version)),
            h('td', null, type === 'DELETE' ? h('span.muted', null, 'deleted')
              : h('span.preview.mono', { 'class': pv.binary ? 'hex' : null }, pv.text || '(empty)')),
            h('td', null, showBtn));
        });
        fill(histBody, rows.length ? rows : [emptyRow(6, 'no changes kept')]);
      }, function (e) {
        if (gen !== detailGen || !ctx.alive || (e && e.name === 'AbortError')) return;
        fill(histBody, emptyRow(6, 'cannot load the history: ' + describe(e)));
      });
      return Promise.all([one, hist]).then(function () {
        if (gen !== detailGen) return;
        detailReady = true;
        maybeReady();
      });
    }

    renderCrumbs();
    reload();
    if (selected) showDetail(selected); else showEmptyDetail();

    return {
      // Only the selected key changed: keep the list, show the key.
      update: function (p) {
        var np = paramBytes(p, 'prefix') || new Uint8Array(0);
        var nf = paramBytes(p, 'flat') !== null && p.flat !== '0';
        if (!bytesEqual(np, prefix) || nf !== flat) return false;
        var nk = paramBytes(p, 'key');
        if (nk && !nk.length) nk = null;
        selected = nk;
        Array.prototype.forEach.call(list.querySelectorAll('.key-row'), function (row) {
          var a = $('.key-entry', row);
          row.classList.toggle('selected', !!nk && a && a.getAttribute('href') === hrefFor(prefix, nk));
        });
        if (nk) showDetail(nk); else { detailGen++; showEmptyDetail(); }
        return true;
      }
    };
  };

  // ------------------------------------------------------------------
  // Watch.

  PAGES.watch = function (view, params, ctx) {
    var prefixInput = h('input.input.mono', {
      type: 'text', placeholder: 'key or prefix (empty: every key)', spellcheck: 'false', autocomplete: 'off', title: 'UTF-8 text; \\xNN for any byte',
      'aria-label': 'key or prefix', value: paramText(params, 'prefix') || ''
    });
    var isPrefix = h('input', { type: 'checkbox', checked: params.exact === undefined || params.exact === '0' });
    var fromRev = h('input.input.input-narrow', { type: 'number', min: '1', placeholder: 'from rev', 'aria-label': 'start revision', title: 'replay changes since this revision (optional)', value: paramText(params, 'rev') || '' });
    var startBtn = h('button.btn.btn-primary', { type: 'submit' }, 'Start');
    var stopBtn = button('Stop', { disabled: true });
    var clearBtn = button('Clear');
    var state = h('span.pill', { dataset: { state: 'idle' } }, 'idle');
    var stateText = h('span.muted', null, 'Not watching.');
    var counter = h('span.muted', null, '');
    var tbody = h('tbody', null, emptyRow(5, 'No events yet.'));
    var banner = errorBanner();
    var events = 0;
    var controller = null;

    view.append(
      pageHead('Watch', h('p.page-sub', null, 'Live changes, streamed from etcd\'s JSON gateway (POST /v3/watch).')),
      h('form.toolbar', {
        onsubmit: function (ev) { ev.preventDefault(); start(); }
      },
      h('div.toolbar-left', null, prefixInput, h('label.check', null, isPrefix, ' prefix'), fromRev, startBtn, stopBtn, clearBtn)),
      banner.el,
      h('section.panel', null,
        h('div.panel-head', null, h('div.watch-state', null, state, stateText), counter),
        h('div.table-wrap.watch-wrap', null,
          h('table.table.table-compact.events', null,
            h('thead', null, h('tr', null, h('th', null, 'Time'), h('th', null, 'Type'), h('th', null, 'Key'),
              h('th', null, 'Value'), h('th.num', null, 'Mod rev'))),
            tbody))));

    stopBtn.addEventListener('click', function () { stop('stopped'); });
    clearBtn.addEventListener('click', function () {
      events = 0;
      setText(counter, '');
      fill(tbody, emptyRow(5, 'No events yet.'));
    });
    ctx.onDispose(function () { if (controller) controller.abort(); });

    function setState(kind, text) {
      state.dataset.state = kind;
      setText(state, kind);
      setText(stateText, text);
      var on = kind === 'connecting' || kind === 'watching';
      startBtn.disabled = on;
      stopBtn.disabled = !on;
      prefixInput.disabled = on;
      isPrefix.disabled = on;
      fromRev.disabled = on;
    }

    function stop(why) {
      if (controller) { controller.abort(); controller = null; }
      setState('stopped', why === 'stopped' ? 'Stopped.' : why);
    }

    function addEvent(ev) {
      var kv = ev.kv || {};
      var type = ev.type || 'PUT';
      var key = b64ToBytes(kv.key);
      var value = b64ToBytes(kv.value);
      var pv = preview(value, 100);
      if (!events) fill(tbody);
      events++;
      setText(counter, events + ' event' + (events === 1 ? '' : 's'));
      var keyStr = keyText(key);
      tbody.insertBefore(h('tr', { 'class': 'event-new' },
        h('td.mono.muted', null, clock()),
        h('td', null, badge(type === 'DELETE' ? 'delete' : 'put', type)),
        h('td', null, h('a.mono.event-key', { href: keyLink(key), title: keyStr }, keyStr)),
        h('td', null, type === 'DELETE' ? h('span.muted', null, '—')
          : h('span.preview.mono', { 'class': pv.binary ? 'hex' : null }, pv.text || '(empty)')),
        h('td.num', null, kv.mod_revision === undefined ? '—' : String(kv.mod_revision))), tbody.firstChild);
      while (tbody.childNodes.length > WATCH_MAX_ROWS) tbody.removeChild(tbody.lastChild);
    }

    function handle(line, what) {
      var msg;
      try { msg = JSON.parse(line); } catch (e) {
        banner.show(new Error('not JSON: ' + line.slice(0, 200)), 'Bad line in the watch stream:');
        return;
      }
      if (msg.error) {
        var e = msg.error;
        var text = typeof e === 'string' ? e : (e.message || JSON.stringify(e));
        banner.show(ApiError(text, e.http_code || null, e.http_status || null), 'The watch failed:');
        return;
      }
      var r = msg.result || {};
      if (r.created) {
        var rev = r.header && r.header.revision;
        setState('watching', 'Watching ' + what + (rev ? ' since revision ' + rev : '') + '.');
        ctx.ready();
      }
      if (r.compact_revision && String(r.compact_revision) !== '0') {
        banner.show(new Error('the start revision was compacted; the oldest kept is ' + r.compact_revision), 'Watch:');
      }
      (r.events || []).forEach(addEvent);
      if (r.canceled) {
        stop('Canceled by the server' + (r.cancel_reason ? ': ' + r.cancel_reason : '.'));
      }
    }

    function start() {
      if (controller) return;
      banner.hide();
      var p = inputBytes(prefixInput.value);
      var create = {};
      var what;
      if (isPrefix.checked) {
        // range_end "\0" means every key from key on (a prefix of only
        // 0xff bytes has no end); key "\0" too means every key.
        var end = prefixEnd(p);
        create.key = p.length ? bytesToB64(p) : 'AA==';
        create.range_end = end ? bytesToB64(end) : 'AA==';
        what = !p.length ? 'every key' : end ? 'keys starting with "' + keyText(p) + '"' : 'keys from "' + keyText(p) + '" on';
      } else {
        if (!p.length) { banner.show(new Error('give the key to watch, or tick "prefix"'), 'Watch:'); return; }
        create.key = bytesToB64(p);
        what = 'key "' + keyText(p) + '"';
      }
      var rev = fromRev.value.trim();
      if (rev) {
        if (!/^[0-9]+$/.test(rev)) { banner.show(new Error('not a revision: ' + rev), 'Watch:'); return; }
        create.start_revision = rev;
      }
      var c = ctx.controller();
      controller = c;
      setState('connecting', 'Connecting…');
      request('/v3/watch', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ create_request: create }),
        signal: c.signal
      }).then(function (res) {
        if (!res.ok) {
          return res.text().then(function (text) { throw errorFrom(res, text); });
        }
        if (!res.body || !res.body.getReader) throw new Error('this browser cannot stream responses');
        var reader = res.body.getReader();
        var decoder = new TextDecoder();
        var buf = '';
        function pump() {
          return reader.read().then(function (chunk) {
            if (controller !== c) { reader.cancel().catch(function () {}); return; }
            if (chunk.done) {
              buf += decoder.decode();
              if (buf.trim()) handle(buf.trim(), what);
              if (controller === c) { controller = null; setState('stopped', 'The server ended the stream.'); }
              return;
            }
            buf += decoder.decode(chunk.value, { stream: true });
            var i;
            while ((i = buf.indexOf('\n')) >= 0) {
              var line = buf.slice(0, i).trim();
              buf = buf.slice(i + 1);
              if (line) handle(line, what);
              if (controller !== c) return;
            }
            return pump();
          });
        }
        return pump();
      }).catch(function (err) {
        if (err && err.name === 'AbortError') return;
        if (controller === c) controller = null;
        if (!ctx.alive) return;
        banner.show(err, 'The watch failed:');
        setState('stopped', 'Stopped by an error.');
      });
    }

    if (params.start === '1') start(); else ctx.ready();
  };

  // ------------------------------------------------------------------
  // Leases.

  PAGES.leases = function (view, params, ctx) {
    var sub = h('p.page-sub', null, 'loading…');
    var banner = errorBanner();
    var tbody = h('tbody', null, emptyRow(4, 'loading…'));
    var updated = h('span.muted', null, '');
    view.append(
      pageHead('Leases', sub),
      banner.el,
      h('section.panel', null,
        h('div.panel-head', null, h('h2', null, 'Granted leases'), updated),
        h('div.table-wrap', null,
          h('table.table.leases', null,
            h('thead', null, h('tr', null, h('th', null, 'ID'), h('th.num', null, 'TTL'),
              h('th', null, 'Remaining'), h('th', null, 'Keys'))),
            tbody))));

    function render(data) {
      var leases = (data && data.leases) || [];
      var keys = leases.reduce(function (n, l) { return n + (l.keys ? l.keys.length : 0); }, 0);
      setText(sub, leases.length + ' lease' + (leases.length === 1 ? '' : 's') + ' · ' + keys + ' attached key' + (keys === 1 ? '' : 's'));
      var rows = leases.map(function (l) {
        var ttl = typeof l.ttl === 'number' ? l.ttl : null;
        var rem = typeof l.remaining === 'number' ? l.remaining : null;
        var frac = ttl && rem !== null && rem >= 0 ? Math.max(0, Math.min(1, rem / ttl)) : 0;
        var keyList = (l.keys || []).map(b64ToBytes);
        var shown = keyList.slice(0, 8);
        return h('tr', { 'data-lease-id': String(l.id) },
          h('td.mono', null, String(l.id)),
          h('td.num', null, fmtSeconds(ttl)),
          h('td', null, h('div.remaining', null,
            h('div.bar', { 'class': rem !== null && rem >= 0 && frac < 0.2 ? 'bar-low' : null },
              h('div.bar-fill', { style: 'width:' + (frac * 100).toFixed(1) + '%' })),
            h('span', { 'class': rem !== null && rem < 0 ? 'warn' : null }, fmtSeconds(rem)))),
          h('td', null, keyList.length
            ? h('div.chips', null, shown.map(function (k) {
              var t = keyText(k);
              return h('a.chip.mono', { href: keyLink(k), title: t }, t);
            }), keyList.length > shown.length ? h('span.muted', null, '+' + (keyList.length - shown.length) + ' more') : null)
            : h('span.muted', null, 'no keys')));
      });
      fill(tbody, rows.length ? rows : [emptyRow(4, 'No leases are granted.')]);
      setText(updated, 'updated ' + clock());
    }

    ctx.poll(function () {
      var c = ctx.controller();
      return api('/api/v1/leases', { signal: c.signal }).then(function (data) {
        if (!ctx.alive) return;
        banner.hide();
        render(data);
        ctx.ready();
      }, function (err) {
        if (!ctx.alive || (err && err.name === 'AbortError')) return;
        banner.show(err, 'Cannot load the leases:');
      });
    }, POLL_MS);
  };

  // ------------------------------------------------------------------
  // Metrics.

  // Prometheus text format: `name{labels} value [timestamp]`; '#' lines are
  // comments. Returns name -> value summed over the label sets.
  function parsePrometheus(text) {
    var out = {};
    text.split('\n').forEach(function (line) {
      line = line.trim();
      if (!line || line[0] === '#') return;
      var i = 0;
      while (i < line.length && line[i] !== '{' && line[i] !== ' ' && line[i] !== '\t') i++;
      var name = line.slice(0, i);
      if (line[i] === '{') {
        var inQuote = false;
        for (i++; i < line.length; i++) {
          var c = line[i];
          if (inQuote) {
            if (c === '\\') i++;
            else if (c === '"') inQuote = false;
          } else if (c === '"') {
            inQuote = true;
          } else if (c === '}') {
            i++;
            break;
          }
        }
      }
      var rest = line.slice(i).trim().split(/\s+/);
      var raw = rest[0];
      var v = raw === '+Inf' || raw === 'Inf' ? Infinity : raw === '-Inf' ? -Infinity : Number(raw);
      if (!name || raw === undefined || raw === '' || isNaN(v)) return;
      out[name] = (out[name] || 0) + v;
    });
    return out;
  }

  var metricSamples = [];   // kept across visits: {t (ms), m: {name: value}}

  function metricSeries() {
    var rate = [];
    var fsync = [];
    var db = [];
    for (var i = 0; i < metricSamples.length; i++) {
      var cur = metricSamples[i];
      var prev = i > 0 ? metricSamples[i - 1] : null;
      var t = cur.t;
      db.push({ t: t, v: num(cur.m.etcd_mvcc_db_total_size_in_bytes) });
      if (!prev) continue;
      var dt = (cur.t - prev.t) / 1000;
      var dc = delta(cur.m.etcd_server_proposals_committed_total, prev.m.etcd_server_proposals_committed_total);
      rate.push({ t: t, v: dc === null || dt <= 0 ? null : dc / dt });
      var ds = delta(cur.m.etcd_disk_wal_fsync_duration_seconds_sum, prev.m.etcd_disk_wal_fsync_duration_seconds_sum);
      var dn = delta(cur.m.etcd_disk_wal_fsync_duration_seconds_count, prev.m.etcd_disk_wal_fsync_duration_seconds_count);
      fsync.push({ t: t, v: ds === null || dn === null || dn === 0 ? null : (ds / dn) * 1000 });
    }
    return { rate: rate, fsync: fsync, db: db };
    function num(v) { return typeof v === 'number' && isFinite(v) ? v : null; }
    // The increase of a counter; null when unknown or reset (a restart).
    function delta(a, b) {
      if (typeof a !== 'number' || typeof b !== 'number' || a < b) return null;
      return a - b;
    }
  }

  // A line chart in inline SVG: the plot stretches to the panel's width,
  // labels are HTML beside it.
  function chart(title, unit, format) {
    var W = 600;
    var H = 140;
    var value = h('span.chart-value', null, '—');
    var maxLabel = h('span.axis-max', null, '');
    var spanLabel = h('span.axis-span', null, '');
    var svg = s('svg', { viewBox: '0 0 ' + W + ' ' + H, preserveAspectRatio: 'none', 'class': 'chart-svg', role: 'img', 'aria-label': title });
    var note = h('div.chart-note', null, 'collecting data…');
    var el = h('section.panel.chart', null,
      h('div.chart-head', null, h('h3', null, title), h('span.chart-now', null, value, unit ? h('span.unit', null, ' ' + unit) : null)),
      h('div.chart-body', null, maxLabel, svg, note, h('div.chart-axis', null, h('span', null, '0'), spanLabel)));
    return {
      el: el,
      draw: function (points) {
        fill(svg);
        var known = points.filter(function (p) { return p.v !== null; });
        var lastV = points.length ? points[points.length - 1].v : null;
        setText(value, lastV === null ? '—' : format(lastV));
        if (known.length < 2) {
          note.hidden = false;
          setText(maxLabel, '');
          setText(spanLabel, '');
          return;
        }
        note.hidden = true;
        var t0 = points[0].t;
        var t1 = points[points.length - 1].t;
        var max = Math.max.apply(null, known.map(function (p) { return p.v; }));
        var top = niceCeil(max);
        setText(maxLabel, format(top));
        setText(spanLabel, 'last ' + Math.max(1, Math.round((t1 - t0) / 1000)) + ' s');
        for (var g = 1; g <= 3; g++) {
          var gy = (H * g / 4).toFixed(1);
          svg.appendChild(s('line', { x1: 0, x2: W, y1: gy, y2: gy, 'class': 'grid', 'vector-effect': 'non-scaling-stroke' }));
        }
        function x(t) { return t1 === t0 ? W : ((t - t0) / (t1 - t0)) * W; }
        function y(v) { return H - 2 - (top > 0 ? (v / top) * (H - 6) : 0); }
        var segs = [];
        var seg = [];
        points.forEach(function (p) {
          if (p.v === null) { if (seg.length) segs.push(seg); seg = []; return; }
          seg.push(p);
        });
        if (seg.length) segs.push(seg);
        segs.forEach(function (sg) {
          var pts = sg.map(function (p) { return x(p.t).toFixed(1) + ',' + y(p.v).toFixed(1); });
          if (sg.length > 1) {
            var area = 'M' + x(sg[0].t).toFixed(1) + ',' + H + ' L' + pts.join(' L') + ' L' + x(sg[sg.length - 1].t).toFixed(1) + ',' + H + ' Z';
            svg.appendChild(s('path', { d: area, 'class': 'area' }));
            svg.appendChild(s('polyline', { points: pts.join(' '), 'class': 'line', 'vector-effect': 'non-scaling-stroke' }));
          } else {
            var px = x(sg[0].t).toFixed(1);
            var py = y(sg[0].v).toFixed(1);
            // A lone point: a zero-length round-capped line stays round
            // when the plot is stretched.
            svg.appendChild(s('line', { x1: px, x2: px, y1: py, y2: py, 'class': 'dot', 'vector-effect': 'non-scaling-stroke' }));
          }
        });
      }
    };
  }

  function niceCeil(v) {
    if (!(v > 0)) return 1;
    var p = Math.pow(10, Math.floor(Math.log10(v)));
    var steps = [1, 2, 2.5, 5, 10];
    for (var i = 0; i < steps.length; i++) if (steps[i] * p >= v) return steps[i] * p;
    return 10 * p;
  }

  PAGES.metrics = function (view, params, ctx) {
    var banner = errorBanner();
    var cards = {};
    function card(id, label) {
      var v = h('span.card-value', null, '—');
      cards[id] = v;
      return h('div.card.card-sm', null, h('span.card-label', null, label), v);
    }
    var charts = {
      rate: chart('Proposals committed', '/s', function (v) { return fmtSmart(v, 1); }),
      fsync: chart('WAL fsync mean latency', 'ms', function (v) { return fmtSmart(v, 2); }),
      db: chart('DB size', '', fmtBytes)
    };
    var filter = h('input.input.mono', { type: 'search', placeholder: 'filter metrics', 'aria-label': 'filter metrics' });
    var rawBody = h('tbody');
    var updated = h('span.muted', null, '');
    view.append(
      pageHead('Metrics', h('p.page-sub', null, 'From /metrics of the member serving this page, every ' + POLL_MS / 1000 + ' s.')),
      banner.el,
      h('div.cards.cards-6', null,
        card('leader', 'Has leader'),
        card('changes', 'Leader changes'),
        card('committed', 'Proposals committed'),
        card('applied', 'Proposals applied'),
        card('pending', 'Proposals pending'),
        card('failed', 'Proposals failed')),
      h('div.charts', null, charts.rate.el, charts.fsync.el, charts.db.el),
      h('details.panel.raw', null,
        h('summary', null, 'All metrics ', updated),
        h('div.raw-tools', null, filter),
        h('div.table-wrap.raw-wrap', null, h('table.table.table-compact', null,
          h('thead', null, h('tr', null, h('th', null, 'Name'), h('th.num', null, 'Value (sum over labels)'))),
          rawBody))));

    var latest = null;
    filter.addEventListener('input', renderRaw);

    function renderRaw() {
      if (!latest) return;
      var f = filter.value.trim().toLowerCase();
      var names = Object.keys(latest).sort().filter(function (n) { return !f || n.toLowerCase().indexOf(f) >= 0; });
      fill(rawBody, names.length ? names.map(function (n) {
        return h('tr', null, h('td.mono', null, n), h('td.num.mono', null, fmtSmart(latest[n], 3)));
      }) : [emptyRow(2, 'no metric matches')]);
    }

    function render() {
      var m = latest;
      function set(id, v, f) { setText(cards[id], typeof v === 'number' ? (f ? f(v) : fmtNum(Math.round(v))) : '—'); }
      set('leader', m.etcd_server_has_leader, function (v) { return v >= 1 ? 'yes' : 'no'; });
      cards.leader.dataset.state = m.etcd_server_has_leader >= 1 ? 'ok' : 'down';
      set('changes', m.etcd_server_leader_changes_seen_total);
      set('committed', m.etcd_server_proposals_committed_total);
      set('applied', m.etcd_server_proposals_applied_total);
      set('pending', m.etcd_server_proposals_pending);
      set('failed', m.etcd_server_proposals_failed_total);
      var series = metricSeries();
      charts.rate.draw(series.rate);
      charts.fsync.draw(series.fsync);
      charts.db.draw(series.db);
      setText(updated, '(' + Object.keys(m).length + ', updated ' + clock() + ')');
      renderRaw();
    }

    if (metricSamples.length) {
      latest = metricSamples[metricSamples.length - 1].m;
      render();
    }

    ctx.poll(function () {
      var c = ctx.controller();
      return fetchText('/metrics', { signal: c.signal }).then(function (text) {
        if (!ctx.alive) return;
        banner.hide();
        latest = parsePrometheus(text);
        var now = Date.now();
        // A gap of over 3 polls (the page was left): start a new series.
        if (metricSamples.length && now - metricSamples[metricSamples.length - 1].t > POLL_MS * 3 + 1000) {
          metricSamples = [];
        }
        metricSamples.push({ t: now, m: latest });
        if (metricSamples.length > METRIC_SAMPLES) metricSamples.splice(0, metricSamples.length - METRIC_SAMPLES);
        render();
        ctx.ready();
      }, function (err) {
        if (!ctx.alive || (err && err.name === 'AbortError')) return;
        banner.show(err, 'Cannot load /metrics:');
      });
    }, POLL_MS);
  };

  // ------------------------------------------------------------------

  window.addEventListener('hashchange', route);
  if (!location.hash || location.hash === '#' || location.hash === '#/') {
    history.replaceState(null, '', '#/cluster');
  }
  route();
  watchHealth();
})();
