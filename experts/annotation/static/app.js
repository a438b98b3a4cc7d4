// The annotation page: three slice views of the scan with the mask overlaid; every tool calls the
// JSON API (see experts/annotation/service.py) and the overlay is fetched again after each answer.
"use strict";

const TOKEN = new URLSearchParams(location.search).get("token") || "";
const COLOURS = [[0, 0, 0], [255, 64, 64], [64, 200, 255], [255, 220, 60], [160, 255, 120], [230, 120, 255]];
const VIEWS = { axial: { axis: 2, u: 0, v: 1 }, coronal: { axis: 1, u: 0, v: 2 }, sagittal: { axis: 0, u: 1, v: 2 } };

const S = {  // the page's state; window.expertseg exposes it to scripts and tests
  status: null, case: null, shape: null, spacing: null, image: null, mask: null,
  cross: [0, 0, 0], zoom: 1, range: [0, 1], busy: 0, version: -1, dirty: false, lastAnswer: null,
};
window.expertseg = S;

function $(id) { return document.getElementById(id); }
function say(text, error) { const m = $("message"); m.textContent = text; m.className = "small" + (error ? " error" : ""); }

async function api(method, path, body) {
  const opts = { method, headers: { "X-Expertseg-Token": TOKEN } };
  if (body !== undefined) { opts.body = JSON.stringify(body); opts.headers["Content-Type"] = "application/json"; }
  S.busy++; document.body.dataset.state = "busy";
  try {
    const r = await fetch(path, opts);
    const kind = r.headers.get("Content-Type") || "";
    const data = kind.startsWith("application/json") ? await r.json() : await r.arrayBuffer();
    if (!r.ok) throw new Error(data.error || ("HTTP " + r.status));
    return data;
  } finally {
    S.busy--; if (S.busy === 0) document.body.dataset.state = "ready";
  }
}
function q(params) { return "?" + new URLSearchParams(params).toString(); }

// --- loading --------------------------------------------------------------------------------
async function refreshStatus() {
  const st = await api("GET", "/api/status");
  const first = S.status === null;
  S.status = st;
  $("who").textContent = `${st.dataset}: annotating as ${st.expert}` + (st.has_own_row ? " (own row)" : " (no row yet)");
  if (first) {
    for (const c of st.classes) $("structure").add(new Option(c, c));
  }
  const start = $("start"), keep = start.value;
  while (start.options.length > 1) start.remove(1);
  for (const e of st.experts) start.add(new Option(e === st.expert ? `${e} (mine)` : e, e));
  start.value = [...start.options].some(o => o.value === keep) ? keep : "nearest";
  const a = st.adapting;
  $("progress").hidden = a.state !== "running";
  $("progress").value = a.steps ? a.step / a.steps : 0;
  $("adapt").disabled = a.state === "running";
  if (a.state === "running") say(`learning my style: step ${a.step} of ${a.steps}`);
  if (S.version >= 0 && st.version !== S.version) {
    say(a.message);
    if (S.case && !S.dirty) { $("start").value = "nearest"; await loadCase(S.case); }
  }
  S.version = st.version;
  document.body.dataset.version = String(st.version);
  return st;
}

async function refreshCases() {
  const { cases } = await api("GET", "/api/cases");
  const body = $("cases").tBodies[0];
  body.innerHTML = "";
  for (const c of cases) {
    const tr = body.insertRow();
    tr.dataset.case = c.case;
    if (c.case === S.case) tr.className = "current";
    tr.insertCell().textContent = c.case;
    tr.insertCell().textContent = c.split;
    const s = tr.insertCell(); s.textContent = c.state; s.className = "state-" + c.state.replace(" ", "-");
    tr.onclick = () => loadCase(c.case).catch(e => say(e.message, true));
  }
}

async function loadCase(id) {
  const info = await api("POST", "/api/load", { case: id, class: $("structure").value, start: $("start").value });
  const newCase = id !== S.case;
  S.case = id; S.shape = info.shape; S.spacing = info.spacing;
  if (newCase || !S.image) {
    S.image = new Float32Array(await api("GET", "/api/volume" + q({ case: id })));
    S.cross = info.shape.map(n => Math.floor(n / 2));
    S.range = info.window; S.zoom = 1;
    $("level").value = 500; $("width").value = 1000;
  }
  $("caseinfo").textContent = `${id}: ${info.shape.join(" x ")} voxels, starts from ${info.start} (${info.start_reason})`;
  await refreshMask();
  await refreshCases();
  S.dirty = false;
  document.body.dataset.case = id;
}

async function refreshMask() {
  S.mask = new Uint8Array(await api("GET", "/api/mask" + q({ case: S.case })));
  let n = 0; for (let i = 0; i < S.mask.length; i++) if (S.mask[i]) n++;
  document.body.dataset.maskVoxels = String(n);
  draw();
}

// --- drawing --------------------------------------------------------------------------------
function layout(name) {
  const v = VIEWS[name], c = $("view-" + name);
  const w = S.shape[v.u], h = S.shape[v.v], su = S.spacing[v.u], sv = S.spacing[v.v];
  const fit = Math.min(c.width / (w * su), c.height / (h * sv));
  const scale = fit * S.zoom;  // screen px per mm
  const focus = S.zoom > 1 ? [S.cross[v.u] + 0.5, h - S.cross[v.v] - 0.5] : [w / 2, h / 2];
  const ox = c.width / 2 - focus[0] * su * scale, oy = c.height / 2 - focus[1] * sv * scale;
  return { v, c, w, h, px: su * scale, py: sv * scale, ox, oy };
}

function index(x, y, z) { return x + S.shape[0] * (y + S.shape[1] * z); }
function voxelOf(name, col, row) {  // slice pixel -> [x, y, z]
  const v = VIEWS[name], p = S.cross.slice();
  p[v.u] = col; p[v.v] = S.shape[v.v] - 1 - row;
  return p;
}

function draw() {
  if (!S.image) return;
  const lo = S.range[0], hi = S.range[1];
  const level = lo + (hi - lo) * $("level").value / 1000, width = Math.max((hi - lo) * $("width").value / 1000, 1e-6);
  const alpha = $("opacity").value / 100, current = $("structure").selectedIndex + 1;
  for (const name of Object.keys(VIEWS)) {
    const L = layout(name), ctx = L.c.getContext("2d");
    const img = ctx.createImageData(L.w, L.h);
    for (let row = 0; row < L.h; row++) {
      for (let col = 0; col < L.w; col++) {
        const p = voxelOf(name, col, row), i = index(p[0], p[1], p[2]);
        let g = ((S.image[i] - (level - width / 2)) / width) * 255;
        g = g < 0 ? 0 : g > 255 ? 255 : g;
        let r = g, gr = g, b = g;
        const m = S.mask ? S.mask[i] : 0;
        if (m) {
          const a = m === current ? alpha : alpha * 0.5, col3 = COLOURS[m % COLOURS.length];
          r = r * (1 - a) + col3[0] * a; gr = gr * (1 - a) + col3[1] * a; b = b * (1 - a) + col3[2] * a;
        }
        const o = 4 * (row * L.w + col);
        img.data[o] = r; img.data[o + 1] = gr; img.data[o + 2] = b; img.data[o + 3] = 255;
      }
    }
    const off = new OffscreenCanvas(L.w, L.h);
    off.getContext("2d").putImageData(img, 0, 0);
    ctx.fillStyle = "black"; ctx.fillRect(0, 0, L.c.width, L.c.height);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(off, L.ox, L.oy, L.w * L.px, L.h * L.py);
    const cx = L.ox + (S.cross[L.v.u] + 0.5) * L.px, cy = L.oy + (L.h - S.cross[L.v.v] - 0.5) * L.py;
    ctx.strokeStyle = "rgba(255, 235, 59, 0.7)"; ctx.lineWidth = 1;
    ctx.beginPath(); ctx.moveTo(cx, 0); ctx.lineTo(cx, L.c.height); ctx.moveTo(0, cy); ctx.lineTo(L.c.width, cy); ctx.stroke();
    if (drag && drag.view === name) drawStroke(ctx, L);
    $("slice-" + name).textContent = `${"xyz"[L.v.axis]} = ${S.cross[L.v.axis]} / ${S.shape[L.v.axis] - 1}`;
  }
}

function drawStroke(ctx, L) {
  const pts = drag.points.map(p => [L.ox + (p[L.v.u] + 0.5) * L.px, L.oy + (L.h - p[L.v.v] - 0.5) * L.py]);
  ctx.strokeStyle = drag.tool.endsWith("-") || drag.tool === "erase" ? "#ff5252" : "#69f0ae";
  ctx.lineWidth = 2;
  ctx.beginPath();
  if (drag.tool === "box" && pts.length > 1) {
    const a = pts[0], b = pts[pts.length - 1];
    ctx.rect(Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.abs(b[0] - a[0]), Math.abs(b[1] - a[1]));
  } else {
    pts.forEach((p, i) => (i ? ctx.lineTo(p[0], p[1]) : ctx.moveTo(p[0], p[1])));
  }
  ctx.stroke();
}

// --- input ----------------------------------------------------------------------------------
let drag = null;

function eventVoxel(name, ev) {
  const L = layout(name), rect = L.c.getBoundingClientRect();
  const col = Math.floor((ev.clientX - rect.left - L.ox) / L.px), row = Math.floor((ev.clientY - rect.top - L.oy) / L.py);
  if (col < 0 || row < 0 || col >= L.w || row >= L.h) return null;
  return voxelOf(name, col, row);
}

// where voxel p shows on view `name`, in page coordinates (for scripts and tests)
S.screenOf = function (name, p) {
  const L = layout(name), rect = L.c.getBoundingClientRect();
  return [rect.left + L.ox + (p[L.v.u] + 0.5) * L.px, rect.top + L.oy + (L.h - p[L.v.v] - 0.5) * L.py];
};

function tool() { return document.querySelector("input[name=tool]:checked").value; }

async function interact(body) {
  try {
    const out = await api("POST", "/api/interact", { case: S.case, class: $("structure").value, ...body });
    S.lastAnswer = out; S.dirty = true;
    say(`step ${out.step}: ${out.voxels} voxels of ${$("structure").value} (model grid), ${out.seconds.toFixed(2)} s`);
    await refreshMask(); await refreshCases();
  } catch (e) { say(e.message, true); draw(); }
}

for (const name of Object.keys(VIEWS)) {
  const c = $("view-" + name);
  c.addEventListener("contextmenu", ev => ev.preventDefault());
  c.addEventListener("wheel", ev => {
    if (!S.image) return;
    ev.preventDefault();
    if (ev.ctrlKey || ev.metaKey) { S.zoom = Math.min(Math.max(S.zoom * (ev.deltaY < 0 ? 1.25 : 0.8), 1), 16); }
    else { const a = VIEWS[name].axis; S.cross[a] = Math.min(Math.max(S.cross[a] + (ev.deltaY < 0 ? 1 : -1), 0), S.shape[a] - 1); }
    draw();
  }, { passive: false });
  c.addEventListener("mousedown", ev => {
    if (!S.image || S.busy) return;
    const p = eventVoxel(name, ev);
    if (!p) return;
    const t = tool();
    if (t === "navigate" || ev.altKey) { S.cross = p; draw(); return; }
    if (t === "click+" || t === "click-") { interact({ tool: "click", points: [p], positive: t === "click+" }); return; }
    drag = { view: name, tool: t, points: [p] };
  });
  c.addEventListener("mousemove", ev => {
    if (!drag || drag.view !== name) return;
    const p = eventVoxel(name, ev);
    const last = drag.points[drag.points.length - 1];
    if (p && (drag.tool === "box" ? true : p.some((x, i) => x !== last[i]))) {
      if (drag.tool === "box") drag.points = [drag.points[0], p]; else drag.points.push(p);
      draw();
    }
  });
}

window.addEventListener("mouseup", () => {
  if (!drag) return;
  const d = drag; drag = null;
  if (d.tool === "box") {
    if (d.points.length < 2) { draw(); return; }
    interact({ tool: "box", points: [d.points[0], d.points[1]], positive: true });
  } else if (d.tool === "erase") {
    interact({ tool: "erase", points: d.points, radius_mm: parseFloat($("brush").value) || 3 });
  } else {
    interact({ tool: "scribble", points: d.points, positive: d.tool === "scribble+" });
  }
});

async function step(what) {
  try {
    const out = await api("POST", "/api/" + what, { case: S.case, class: $("structure").value });
    say(`${what}: ${out.interactions} interaction(s) now`);
    S.dirty = out.interactions > 0;
    await refreshMask(); await refreshCases();
  } catch (e) { say(e.message, true); }
}

$("undo").onclick = () => step("undo");
$("redo").onclick = () => step("redo");
window.addEventListener("keydown", ev => {
  if (ev.target.tagName === "INPUT" || ev.target.tagName === "SELECT") return;
  if (ev.key === "z") step("undo"); else if (ev.key === "y") step("redo");
});
for (const id of ["level", "width", "opacity"]) $(id).addEventListener("input", draw);
$("structure").onchange = () => S.case && loadCase(S.case).catch(e => say(e.message, true));
$("start").onchange = () => {
  if (!S.case) return;
  if (S.dirty && !confirm("Starting from another expert discards this case's corrections. Continue?")) return;
  S.dirty = false;
  loadCase(S.case).catch(e => say(e.message, true));
};
$("save").onclick = async () => {
  try {
    const out = await api("POST", "/api/save", { case: S.case, mode: $("mode").value });
    S.dirty = false;
    say(`saved ${out.saved} (${out.mode}); log in ${out.log}`);
    await refreshMask();  // a dense save fills in every structure: show what was written
    await refreshCases(); await refreshStatus();
    document.body.dataset.saved = out.saved;
  } catch (e) { say(e.message, true); }
};
$("adapt").onclick = async () => {
  try { await api("POST", "/api/adapt", {}); await refreshStatus(); poll(); } catch (e) { say(e.message, true); }
};
$("suggest").onclick = async () => {
  try {
    say("ranking the untouched cases ...");
    const s = await api("GET", "/api/suggest");
    if (!s.case) { say(s.reason); return; }
    say(`label ${s.case} next (${s.strategy}: ${s.reason})`);
    await loadCase(s.case);
  } catch (e) { say(e.message, true); }
};

async function poll() {
  const st = await refreshStatus();
  if (st.adapting.state === "running") setTimeout(poll, 1000);
  else if (st.adapting.state === "failed") say(st.adapting.message, true);
}

(async function start() {
  try {
    await refreshStatus();
    await refreshCases();
    const first = document.querySelector("#cases tr");
    if (first) await loadCase(first.dataset.case);
    document.body.dataset.state = "ready";
    if (S.status.adapting.state === "running") poll();
  } catch (e) { say(e.message, true); document.body.dataset.state = "error"; }
})();
