// meshctl ui: the service map. Data comes from /api/graph (a view of the flow stores) and
// /api/events (that view's changed edges, aggregated by the server); nothing leaves localhost.
"use strict";

const COLORS = {forwarded: "#2da44e", dropped: "#d73a49", both: "#8250df", audit: "#e3a008"};
const BIG = 400;  // edges: above this, labels only when zoomed in (the map stays fast)
const state = {view: null, plan: null, source: null, lastEventAt: 0, events: 0};

const cy = cytoscape({
  container: document.getElementById("map"),
  wheelSensitivity: 0.3,
  textureOnViewport: true,
  hideEdgesOnViewport: true,
  style: [
    {selector: "node", style: {
      "label": "data(label)", "font-size": 11, "text-valign": "center", "text-halign": "center",
      "background-color": "#ffffff", "border-width": 1.5, "border-color": "#57606a", "shape": "round-rectangle",
      "width": 96, "height": 30, "text-wrap": "ellipsis", "text-max-width": 90}},
    {selector: "node[kind != 'workload']", style: {"shape": "ellipse", "background-color": "#f6f8fa"}},
    // namespaces: a box behind their workloads (place() sizes it; plain nodes, not compound ones,
    // which would double the cost of drawing a big map)
    {selector: "node.namespace", style: {
      "label": "data(label)", "text-valign": "top", "text-halign": "center", "text-margin-y": 18,
      "font-weight": "bold", "background-color": "#f6f8fa", "background-opacity": 0.6, "border-color": "#d0d7de",
      "shape": "round-rectangle", "width": "data(w)", "height": "data(h)", "events": "no",
      "z-index-compare": "manual", "z-index": 0}},
    {selector: "node[kind]", style: {"z-index-compare": "manual", "z-index": 20}},
    {selector: "edge", style: {"z-index-compare": "manual", "z-index": 10}},
    {selector: "edge", style: {
      "width": "data(width)", "line-color": "data(color)", "target-arrow-color": "data(color)",
      "target-arrow-shape": "triangle", "curve-style": "bezier", "label": "data(text)", "font-size": 9,
      "text-background-color": "#ffffff", "text-background-opacity": 0.85, "text-background-padding": 1,
      "min-zoomed-font-size": 6}},
    {selector: "edge.audit", style: {"line-style": "dashed"}},
    {selector: "edge.same", style: {"line-color": "#c9d1d9", "target-arrow-color": "#c9d1d9"}},
    {selector: "edge.change", style: {"width": 4, "z-index": 10}},
    {selector: "edge:selected", style: {"overlay-color": "#0969da", "overlay-opacity": 0.2, "overlay-padding": 4}},
    // big maps: straight edges without labels, plain node labels (the edge panel has the detail)
    {selector: "edge.big", style: {"curve-style": "haystack", "haystack-radius": 0, "label": "",
                                   "target-arrow-shape": "none", "opacity": 0.7}},
    {selector: "node.big", style: {"text-wrap": "none", "min-zoomed-font-size": 10}},
  ],
});

function query() {
  const form = new FormData(document.getElementById("filters"));
  const params = new URLSearchParams();
  for (const [k, v] of form.entries()) if (v) params.append(k, v);
  // the first load takes the window `meshctl ui --since` gave, unless the address names one
  if (!state.view && !new URLSearchParams(location.search).has("since")) params.delete("since");
  return params;
}

function fillForm() {
  const params = new URLSearchParams(location.search);
  for (const el of document.getElementById("filters").elements) {
    if (el.name && params.get(el.name)) el.value = params.get(el.name);
  }
}

function edgeData(e) {
  const total = e.counts.forwarded + e.counts.dropped + e.counts.audit;
  return {id: e.id, source: e.source, target: e.target, label: e.label, verdict: e.verdict,
          counts: e.counts, text: `${e.label} · ${total}`, color: COLORS[e.verdict] || "#57606a",
          width: Math.min(1.5 + Math.log2(1 + total), 8)};
}

function nodeData(n) {
  return {id: n.id, label: n.label, kind: n.kind, namespace: n.namespace};
}

function addNodes(nodes, out) {
  for (const n of nodes) {
    if (n.namespace && !cy.getElementById("ns:" + n.namespace).length && !out.some(x => x.data.id === "ns:" + n.namespace)) {
      out.push({group: "nodes", classes: "namespace", data: {id: "ns:" + n.namespace, label: n.namespace, w: 1, h: 1}});
    }
    if (!cy.getElementById(n.id).length) out.push({group: "nodes", data: nodeData(n)});
  }
}

// Namespaces as blocks in a grid; workloads on a circle inside a small namespace (edges between
// them never cross a box), in a grid inside a big one; the rest in a column on the left.
const CIRCLE_MAX = 12;
function place() {
  const groups = new Map();
  cy.nodes().not(".namespace").forEach(n => {
    const key = n.data("namespace") || "";
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(n);
  });
  const byLabel = (a, b) => a.data("label") < b.data("label") ? -1 : 1;
  const blocks = [...groups.keys()].filter(k => k).sort();
  const perRow = Math.max(1, Math.ceil(Math.sqrt(blocks.length)));
  const cellW = 150, cellH = 80;
  let x0 = 0, y0 = 0, rowH = 0, col = 0;
  cy.batch(() => {
    (groups.get("") || []).sort(byLabel).forEach((n, i) => n.position({x: -260, y: i * 110}));
    for (const key of blocks) {
      const members = groups.get(key).sort(byLabel);
      let w, h;
      if (members.length <= CIRCLE_MAX) {
        const r = members.length === 1 ? 0 : Math.max(110, members.length * 36);
        members.forEach((n, i) => {
          const a = -Math.PI / 2 + (2 * Math.PI * i) / members.length;
          n.position({x: x0 + r + Math.cos(a) * r, y: y0 + r + Math.sin(a) * r});
        });
        w = 2 * r + 260; h = 2 * r + 160;
      } else {
        const cols = Math.max(1, Math.ceil(Math.sqrt(members.length * 1.6)));
        members.forEach((n, i) => n.position({x: x0 + (i % cols) * cellW, y: y0 + Math.floor(i / cols) * cellH}));
        w = cols * cellW + 100; h = Math.ceil(members.length / cols) * cellH + 100;
      }
      const xs = members.map(n => n.position("x")), ys = members.map(n => n.position("y"));
      const left = Math.min(...xs) - 70, right = Math.max(...xs) + 70;
      const top = Math.min(...ys) - 50, bottom = Math.max(...ys) + 35;
      cy.getElementById("ns:" + key).data({w: right - left, h: bottom - top})
        .position({x: (left + right) / 2, y: (top + bottom) / 2});
      rowH = Math.max(rowH, h);
      col += 1; x0 += w;
      if (col >= perRow) { col = 0; x0 = 0; y0 += rowH; rowH = 0; }
    }
  });
}

function render(data) {
  const t0 = performance.now();
  cy.elements().remove();
  const els = [];
  addNodes(data.nodes, els);
  if (data.plan) addNodes(data.plan.nodes, els);
  const big = data.edges.length > BIG ? " big" : "";
  for (const e of data.edges) {
    els.push({group: "edges", data: edgeData(e), classes: (data.plan ? "same" : e.verdict) + big});
  }
  if (big) for (const el of els) if (el.group === "nodes") el.classes = (el.classes || "") + big;
  cy.batch(() => cy.add(els));
  if (data.plan) drawPlan(data);
  place();
  cy.fit(undefined, 30);
  setStatus(data.flows);
  return new Promise(resolve => requestAnimationFrame(() => requestAnimationFrame(() => resolve(performance.now() - t0))));
}

function drawPlan(data) {
  const seen = new Map(data.edges.map(e => [e.id, e]));
  for (const c of data.plan.changes) {
    const flows = seen.get(c.id);
    const total = flows ? flows.counts.forwarded + flows.counts.dropped + flows.counts.audit : 0;
    const color = c.change === "drop" ? COLORS.dropped : COLORS.forwarded;
    const el = cy.getElementById(c.id);
    const d = {id: c.id, source: c.source, target: c.target, label: c.label, color, width: 4,
               text: `${c.label} · ${c.change === "drop" ? "will drop" : "newly allowed"} · ${total} flows seen`,
               change: c.change, counts: flows ? flows.counts : null};
    if (el.length) el.data(d).removeClass("same").addClass("change");
    else cy.add({group: "edges", data: d, classes: "change"});
  }
}

function applyChanges(changes) {
  const els = [];
  addNodes(changes.nodes, els);
  let added = els.length > 0;
  cy.batch(() => {
    cy.add(els);
    for (const e of changes.edges) {
      const el = cy.getElementById(e.id);
      const data = edgeData(e);
      if (el.length) {
        if (el.hasClass("change")) continue;
        el.data(data);
        if (!state.plan) el.classes(e.verdict);
      } else {
        cy.add({group: "edges", data, classes: state.plan ? "same" : e.verdict});
        added = true;
      }
    }
    for (const [id, forwarded, dropped, audit, verdict] of changes.counts || []) {
      const el = cy.getElementById(id);
      if (!el.length || el.hasClass("change")) continue;
      const e = {...el.data(), counts: {forwarded, dropped, audit}, verdict};
      el.data(edgeData(e));
      if (!state.plan) el.classes(verdict + (el.hasClass("big") ? " big" : ""));
    }
  });
  if (added) place();
  setStatus(changes.flows);
}

function setStatus(flows) {
  document.getElementById("status").textContent =
    `${cy.nodes().not(".namespace").length} workloads · ${cy.edges().length} edges · ${flows} flows`;
}

async function load() {
  if (state.source) state.source.close();
  const params = query();
  history.replaceState(null, "", "?" + params.toString());
  const res = await fetch("/api/graph?" + params.toString());
  const data = await res.json();
  if (data.error) { document.getElementById("status").textContent = data.error; return; }
  state.view = data.view;
  const window_ = document.querySelector("select[name=since]");
  if (![...window_.options].some(o => o.value === data.since)) window_.add(new Option(data.since));
  window_.value = data.since;
  state.plan = data.plan;
  document.getElementById("cluster").textContent = data.cluster;
  document.getElementById("mode").textContent = data.plan ? "plan view: " + data.plan.title : (data.note || "");
  document.body.classList.toggle("plan", !!data.plan);
  await render(data);
  state.source = new EventSource("/api/events?view=" + data.view);
  state.source.onmessage = msg => {
    state.lastEventAt = Date.now();
    state.events += 1;
    applyChanges(JSON.parse(msg.data));
  };
}

function esc(text) {
  return String(text).replace(/[&<>"]/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));
}

async function showEdge(edge) {
  const panel = document.getElementById("panel");
  const res = await fetch(`/api/edge?view=${state.view}&id=${encodeURIComponent(edge.id())}`);
  const d = await res.json();
  const change = edge.data("change");
  let html = `<h3>${esc(edge.data("source"))} → ${esc(edge.data("target"))} ${esc(edge.data("label"))}</h3>`;
  if (change) html += `<p><strong>${change === "drop" ? "This change drops it" : "This change allows it"}</strong></p>`;
  if (d.error) {
    panel.innerHTML = html + `<p class="hint">No flows seen on this connection in the window.</p>`;
    return;
  }
  html += `<p>forwarded ${d.counts.forwarded} · dropped ${d.counts.dropped} · audit ${d.counts.audit}</p>`;
  for (const [verdict, rule] of Object.entries(d.rules)) {
    html += `<div class="rule ${verdict}"><strong>${verdict}</strong>: ${esc(rule)}</div>`;
  }
  html += `<p><button id="trace">trace this</button></p><pre id="trace-out" hidden></pre>`;
  html += "<table><tr><td>time</td><td>flow</td><td>verdict</td></tr>";
  for (const f of d.flows) {
    const t = new Date(f.time_ns / 1e6).toLocaleTimeString();
    html += `<tr><td>${t}</td><td>${esc(f.src)}:${f.src_port} → ${esc(f.dst)}:${f.dst_port} (${esc(f.node)})</td>` +
            `<td>${esc(f.verdict)}<br><span class="hint">${esc(f.rule)}</span></td></tr>`;
  }
  panel.innerHTML = html + "</table>";
  const last = d.flows[0];
  document.getElementById("trace").onclick = async () => {
    const q = new URLSearchParams({src: last.src, dst: last.dst, port: d.port, protocol: d.protocol});
    const out = await (await fetch("/api/trace?" + q)).json();
    const pre = document.getElementById("trace-out");
    pre.hidden = false;
    pre.textContent = out.text || out.error;
  };
}

cy.on("tap", "edge", evt => showEdge(evt.target));
document.getElementById("filters").addEventListener("submit", evt => { evt.preventDefault(); load(); });
fillForm();
window.meshctl = {cy, state, render, ready: load().then(() => true)};
