// The cloro dashboard: asks /dashboard/data with the admin token and redraws, again a second
// after each answer; `?since=<version>` makes the server answer as soon as the store changed
// (at most two seconds later).
// The token comes from the URL's fragment (#token=…, never sent to the server), is kept in this
// tab's sessionStorage and removed from the address bar. Everything is built with DOM calls
// and textContent (no innerHTML): error messages come from upstream engines.
'use strict';
(function () {
  const SVG = 'http://www.w3.org/2000/svg';
  const KEY = 'cloro-admin-token';
  const fromHash = new URLSearchParams(location.hash.slice(1)).get('token');
  if (fromHash) {
    try { sessionStorage.setItem(KEY, fromHash); } catch (e) { /* storage off: keep it in memory */ }
    history.replaceState(null, '', location.pathname + location.search);
  }
  let token = fromHash;
  if (!token) {
    try { token = sessionStorage.getItem(KEY); } catch (e) { token = null; }
  }

  const $ = (id) => document.getElementById(id);
  function el(tag, attrs, children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    for (const c of children || []) e.append(c);
    return e;
  }
  function svg(tag, attrs) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    return e;
  }
  function status(state, text) {
    const s = $('status');
    s.dataset.state = state;
    s.textContent = text;
  }
  function stat(id, label, value) {
    return el('div', { class: 'stat' }, [
      el('span', { class: 'label' }, [label]),
      el('span', { id: id, class: 'value' }, [String(value)]),
    ]);
  }
  function fmtMs(ms) {
    if (ms < 1000) return Math.round(ms) + ' ms';
    if (ms < 120000) return (ms / 1000).toFixed(1) + ' s';
    return (ms / 60000).toFixed(1) + ' min';
  }

  // Bars of completed (bottom) and failed (stacked) tasks per bucket.
  function throughputChart(o, bucketMs) {
    const n = o.completed.length, w = 600, h = 80, top = 2;
    const s = svg('svg', { viewBox: `0 0 ${w} ${h}`, preserveAspectRatio: 'none' });
    let max = 1, total = 0;
    for (let i = 0; i < n; i++) {
      max = Math.max(max, o.completed[i] + o.failed[i]);
      total += o.completed[i] + o.failed[i];
    }
    const bw = w / n, scale = (h - top) / max;
    for (let i = 0; i < n; i++) {
      const c = o.completed[i] * scale, f = o.failed[i] * scale;
      if (c > 0) s.append(svg('rect', { class: 'completed', x: i * bw, y: h - c, width: bw * 0.8, height: c }));
      if (f > 0) s.append(svg('rect', { class: 'failed', x: i * bw, y: h - c - f, width: bw * 0.8, height: f }));
    }
    return [s, el('div', { class: 'axis' }, [`max ${max} per ${bucketMs / 1000} s · ${total} in ${Math.round(n * bucketMs / 60000)} min`])];
  }

  // The mean queue wait per bucket, as a line (gaps where no task started).
  function waitChart(o) {
    const n = o.waitMs.length, w = 600, h = 80, top = 2;
    const s = svg('svg', { viewBox: `0 0 ${w} ${h}`, preserveAspectRatio: 'none' });
    let max = 1;
    for (const v of o.waitMs) if (v !== null) max = Math.max(max, v);
    const bw = w / n, scale = (h - top - 2) / max;
    let points = [];
    const flush = () => {
      if (points.length === 1) points.push([points[0][0] + bw * 0.8, points[0][1]]);
      if (points.length) s.append(svg('polyline', { class: 'wait', points: points.map((p) => p.join(',')).join(' ') }));
      points = [];
    };
    o.waitMs.forEach((v, i) => {
      if (v === null) { flush(); return; }
      points.push([i * bw + bw / 2, h - 1 - v * scale]);
    });
    flush();
    return [s, el('div', { class: 'axis' }, [`max ${fmtMs(max)}`])];
  }

  function orgCard(o, bucketMs) {
    const id = o.orgId;
    const limit = o.concurrencyLimit;
    const meter = el('div', { class: 'meter' }, [el('div')]);
    meter.firstChild.style.width = `${limit > 0 ? Math.min(100, (100 * o.concurrencyUsed) / limit) : 0}%`;
    const processing = el('div', { class: 'stat' }, [
      el('span', { class: 'label' }, ['Processing / limit']),
      el('span', { class: 'value' }, [
        el('span', { id: `${id}-processing` }, [String(o.processing)]),
        ' / ',
        el('span', { id: `${id}-limit` }, [String(limit)]),
      ]),
      meter,
    ]);
    const maxQ = Math.max(1, ...o.byPriority.map((p) => p.queued));
    const prio = el('table', { class: 'prio' }, o.byPriority.map((p) => {
      const bar = el('div', { class: 'bar' });
      bar.style.width = `${(100 * p.queued) / maxQ}%`;
      return el('tr', {}, [
        el('td', { class: 'n' }, [`P${p.priority}`]),
        el('td', {}, [bar]),
        el('td', { id: `${id}-p${p.priority}`, class: 'n' }, [String(p.queued)]),
      ]);
    }));
    const failures = o.failures.length
      ? el('ul', { class: 'failures' }, o.failures.map((f) => el('li', {}, [
        el('span', { class: 'muted' }, [new Date(f.atMs).toLocaleTimeString() + ' ']),
        `${f.taskType} ${f.taskId} `,
        el('code', {}, [JSON.stringify(f.error && f.error.error ? f.error.error : f.error)]),
      ])))
      : el('p', { class: 'muted' }, ['No failures on this node lately.']);
    return el('section', { id: `org-${id}`, class: 'card org' }, [
      el('h2', {}, [id]),
      el('div', { class: 'stats' }, [stat(`${id}-queued`, 'Queued', o.queued), processing]),
      el('div', { class: 'row' }, [
        el('div', { class: 'section' }, [el('h3', {}, ['Queue by priority']),
          o.byPriority.length ? prio : el('p', { class: 'muted' }, ['Empty.'])]),
        el('div', { class: 'section' }, [el('h3', {}, ['Recent failures']), failures]),
      ]),
      el('div', { class: 'row' }, [
        el('div', { class: 'chart' }, [el('h3', {}, ['Throughput · completed, failed']), ...throughputChart(o, bucketMs)]),
        el('div', { class: 'chart' }, [el('h3', {}, ['Queue wait · mean']), ...waitChart(o)]),
      ]),
    ]);
  }

  function render(d) {
    $('node-workers').textContent = `${d.node.workersBusy} / ${d.node.workers}`;
    $('node-backlog').textContent = String(d.node.webhookBacklog);
    const engines = $('node-engines');
    engines.replaceChildren(...(d.node.engines.length
      ? d.node.engines.map((e) => el('span', {
        class: e.health === 'ok' ? 'engine' : 'engine bad',
        title: e.message || '',
      }, [`${e.name} (${e.kind}): ${e.health}`]))
      : [el('span', { class: 'engine' }, ['default engine'])]));
    $('orgs').replaceChildren(...d.orgs.map((o) => orgCard(o, d.bucketMs)));
    status('live', `Live · updated ${new Date(d.nowMs).toLocaleTimeString()}`);
  }

  let version = null;
  async function poll() {
    if (!token) {
      status('unauthorized', 'Unauthorized: open /dashboard#token=<admin token>');
      return;
    }
    try {
      const url = version === null ? '/dashboard/data' : `/dashboard/data?since=${version}`;
      const r = await fetch(url, {
        headers: { Authorization: `Bearer ${token}` },
        cache: 'no-store',
      });
      if (r.status === 401) {
        status('unauthorized', 'Unauthorized: missing or invalid admin token');
        return;
      }
      if (r.status === 404) {
        status('error', 'Not served: no admin token is configured (cloro serve --admin-token-env)');
        return;
      }
      if (!r.ok) {
        status('error', `Error ${r.status}; retrying`);
      } else {
        const d = await r.json();
        version = d.version;
        render(d);
      }
    } catch (e) {
      status('error', 'Server unreachable; retrying');
    }
    setTimeout(poll, 1000);
  }
  poll();
})();
