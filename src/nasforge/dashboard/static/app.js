// nasforge dashboard: fetches /api/... JSON and polls while a run is live.
"use strict";
const BOOT = JSON.parse(document.getElementById("boot").textContent);
const POLL_MS = 2000;
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s == null ? "" : s).replace(/[&<>"']/g,
  (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const num = (v) => v == null ? "-" : (typeof v === "number" ?
  (Math.abs(v) >= 1e4 ? v.toExponential(2) : Number.isInteger(v) ? String(v) : v.toPrecision(4)) : esc(v));
const dur = (s) => s == null ? "-" : s < 90 ? s.toFixed(1) + " s" : (s / 60).toFixed(1) + " min";
const get = (url) => fetch(url).then((r) => { if (!r.ok) throw new Error(url + ": " + r.status); return r.json(); });
const runQ = (name) => "run=" + encodeURIComponent(name);

function draw(figs) {
  for (const [name, fig] of Object.entries(figs)) {
    const el = $("plot-" + name);
    if (el) Plotly.react(el, fig.data, fig.layout, {displaylogo: false, responsive: true});
  }
}

// ---------------------------------------------------------------- runs page
async function runsPage() {
  const d = await get("/api/runs");
  $("root").textContent = d.runs.length + " runs under " + d.root;
  const sel = new Set([...document.querySelectorAll(".pick:checked")].map((c) => c.value));
  let h = "<tr><th></th><th>run</th><th>status</th><th>task</th><th>dataset</th><th>space</th>" +
    "<th>strategy</th><th>best</th><th>trials</th><th>elapsed</th></tr>";
  for (const r of d.runs) {
    h += `<tr class="st-${esc(r.status)}"><td><input type="checkbox" class="pick" value="${esc(r.name)}"` +
      `${sel.has(r.name) ? " checked" : ""}></td><td><a href="/run?${runQ(r.name)}">${esc(r.name)}</a></td>` +
      `<td class="status">${esc(r.status)}</td><td>${esc(r.task)}</td><td>${esc(r.dataset)}</td>` +
      `<td>${esc(r.space)}</td><td>${esc(r.strategy)}</td>` +
      `<td>${num(r.best)} <small>${esc(r.metric || "")}</small></td><td class="ntrials">${num(r.trials)}</td>` +
      `<td>${dur(r.elapsed_s)}</td></tr>`;
  }
  $("runs").innerHTML = h;
  const btn = $("compare");
  const update = () => { btn.disabled = document.querySelectorAll(".pick:checked").length < 2; };
  document.querySelectorAll(".pick").forEach((c) => c.addEventListener("change", update));
  update();
  btn.onclick = () => {
    const q = [...document.querySelectorAll(".pick:checked")].map((c) => runQ(c.value)).join("&");
    location.href = "/compare?" + q;
  };
  // a live run polls fast; otherwise slowly, so that a run started later appears
  setTimeout(runsPage, d.runs.some((r) => r.status === "running") ? POLL_MS : 5 * POLL_MS);
}

// ----------------------------------------------------------------- run page
const T = {sort: "id", desc: false, offset: 0, limit: 50, q: "", status: ""};

async function runSummary() {
  const d = await get("/api/run?" + runQ(BOOT.run));
  const s = d.summary;
  $("summary").innerHTML = `<p><b class="status st-${esc(s.status)}" id="run-status">${esc(s.status)}</b> · ` +
    `${esc(s.task)} on ${esc(s.dataset)} · space ${esc(s.space)} · strategy ${esc(s.strategy)} · ` +
    `estimator ${esc(s.estimator)} · best ${esc(s.metric)} ${num(s.best)} · ${num(s.trials)} trials ` +
    `(${s.counts.ok} ok, ${s.counts.failed} failed, ${s.counts.running} running) · ${dur(s.elapsed_s)}</p>` +
    `<p>objectives: ${esc(s.objectives.join(", "))}</p>`;
  draw(d.figures);
  const f = d.final;
  if (f && f.metrics) {
    let h = "<table class='grid card'>";
    for (const [k, v] of Object.entries(f.metrics)) h += `<tr><th>${esc(k)}</th><td>${num(v)}</td></tr>`;
    h += "</table>";
    h += `<p>trial ${esc(f.trial_id)}: <code>${esc(f.arch)}</code></p>`;
    h += `<p><a href="/file?${runQ(BOOT.run)}&path=best/model.onnx">download model.onnx</a> · ` +
      `<a href="/file?${runQ(BOOT.run)}&path=best/arch.json">arch.json</a> · ` +
      `<a href="/file?${runQ(BOOT.run)}&path=best/summary.json">summary.json</a></p>`;
    if (f.trial_id != null) h += `<div id="final-svg"></div>`;
    $("final").innerHTML = h;
    if (f.trial_id != null) get(`/api/trial?${runQ(BOOT.run)}&id=${f.trial_id}`)
      .then((t) => { $("final-svg").innerHTML = t.svg; });
  } else if (f && f.message) {
    $("final").textContent = f.message;
  }
  return s.status === "running";
}

async function trialsTable() {
  const q = new URLSearchParams({run: BOOT.run, sort: T.sort, desc: T.desc ? "1" : "0",
    offset: T.offset, limit: T.limit, q: T.q, status: T.status});
  const d = await get("/api/trials?" + q);
  const cols = ["id", "status", ...d.metrics.filter((m) => !["epochs", "data_fraction"].includes(m)), "cost", "arch"];
  let h = "<tr>" + cols.map((c) => `<th data-col="${esc(c)}" class="sort">${esc(c)}` +
    `${T.sort === c ? (T.desc ? " ▼" : " ▲") : ""}</th>`).join("") + "</tr>";
  for (const r of d.rows) {
    h += `<tr class="trial st-${esc(r.status)}" data-id="${r.id}">` + cols.map((c) => {
      if (c === "id" || c === "status") return `<td>${esc(r[c])}</td>`;
      if (c === "cost") return `<td>${num(r.cost)}</td>`;
      if (c === "arch") return `<td class="arch">${esc(r.arch)}${r.error ? " <i>(" + esc(r.error) + ")</i>" : ""}</td>`;
      return `<td>${num(r.metrics[c])}</td>`;
    }).join("") + "</tr>";
  }
  $("trials").innerHTML = h;
  $("count").textContent = `${d.total ? d.offset + 1 : 0}-${Math.min(d.offset + d.limit, d.total)} of ${d.total}` +
    (d.total !== d.all ? ` (filtered from ${d.all})` : "");
  $("prev").disabled = d.offset === 0;
  $("next").disabled = d.offset + d.limit >= d.total;
  document.querySelectorAll("#trials th.sort").forEach((th) => th.onclick = () => {
    const c = th.dataset.col;
    T.desc = T.sort === c ? !T.desc : c !== "id" && c !== "arch";
    T.sort = c; T.offset = 0; trialsTable();
  });
  document.querySelectorAll("#trials tr.trial").forEach((tr) => tr.onclick = () => detail(tr.dataset.id));
}

async function detail(id) {
  const t = await get(`/api/trial?${runQ(BOOT.run)}&id=${id}`);
  let h = `<p>trial ${t.id} · ${esc(t.status)} · attempt ${t.attempt} · cost ${num(t.cost)} s · ` +
    `fidelity <code>${esc(JSON.stringify(t.fidelity))}</code></p><p><code>${esc(t.arch)}</code></p>`;
  h += "<table class='grid card'>";
  for (const [k, v] of Object.entries(t.metrics || {})) h += `<tr><th>${esc(k)}</th><td>${num(v)}</td></tr>`;
  for (const [k, v] of Object.entries(t.report || {})) h += `<tr><th>${esc(k)} (report)</th><td>${num(v)}</td></tr>`;
  h += "</table>";
  if (t.error) h += `<pre class="error">${esc(t.error)}</pre>`;
  h += t.svg;
  $("detail").innerHTML = h;
}

async function runPage() {
  let live = true;
  try { live = await runSummary(); } finally { await trialsTable(); }
  if (live) setTimeout(runPage, POLL_MS);
}

function wireFilters() {
  let timer = null;
  $("q").addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => { T.q = $("q").value; T.offset = 0; trialsTable(); }, 200);
  });
  $("status").addEventListener("change", () => { T.status = $("status").value; T.offset = 0; trialsTable(); });
  $("prev").onclick = () => { T.offset = Math.max(0, T.offset - T.limit); trialsTable(); };
  $("next").onclick = () => { T.offset += T.limit; trialsTable(); };
}

// ------------------------------------------------------------- compare page
async function comparePage() {
  const d = await get("/api/compare?" + BOOT.runs.map(runQ).join("&"));
  draw(d.figures);
  $("archs").innerHTML = d.archs.map((a) => `<div class="col"><h3>${esc(a.run)}</h3>` +
    (a.best ? `<p>trial ${a.best.id}: <code>${esc(a.best.arch)}</code></p>${a.best.svg}` : "<p>no ok trial</p>") +
    "</div>").join("");
}

if (BOOT.page === "runs") runsPage();
else if (BOOT.page === "run") { wireFilters(); runPage(); }
else if (BOOT.page === "compare") comparePage();
