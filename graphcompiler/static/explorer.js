// The explorer page's script (graphcompiler/explore.py inlines it into each page): the panel, the stepper.
(function(){
"use strict";
const data = JSON.parse(document.getElementById("gc-data").textContent);
const byId = {}; data.nodes.forEach(n => byId[n.id] = n);
const byName = {}; data.nodes.forEach(n => byName[n.name] = n);
const svg = document.querySelector("#graph svg");
const gOf = {}; const edges = {};
svg.querySelectorAll("g.node").forEach(g => { const t = g.querySelector("title"); if (t) gOf[t.textContent] = g; });
svg.querySelectorAll("g.edge").forEach(g => { const t = g.querySelector("title"); if (t) edges[t.textContent.replace("&gt;", ">")] = g; });
const info = document.getElementById("info"), stepBox = document.getElementById("step"), mem = document.getElementById("memory");
let marked = [];
function clearMarks(){ marked.forEach(([el, c]) => el.classList.remove(c)); marked = []; }
function mark(id, cls){ const g = gOf[id]; if (g){ g.classList.add(cls); marked.push([g, cls]); } }
function markEdge(src, dst){ const e = edges[src + "->" + dst]; if (e){ e.classList.add("gc-origin"); marked.push([e, "gc-origin"]); } }
function esc(s){ return String(s).replace(/[&<>"]/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"}[c])); }
function link(id){ const n = byId[id]; return n ? '<span class="link" data-id="' + esc(id) + '">' + esc(n.name) + '</span>' : ""; }
function row(k, v){ return "<tr><td>" + k + "</td><td>" + v + "</td></tr>"; }
function show(id, keepMarks){
  const n = byId[id]; if (!n) return;
  if (!keepMarks){ clearMarks(); }
  mark(id, "gc-selected");
  let h = '<h2 id="info-name">' + esc(n.name) + '</h2><table>';
  h += row("op", '<b id="info-op">' + esc(n.op) + '</b>') + row("shape", '<span id="info-shape">' + esc(n.shape) + '</span>') + row("dtype", esc(n.dtype));
  h += row("kind", esc(n.kind) + (n.gradient ? " (added by build_grad)" : ""));
  const attrs = Object.entries(n.attrs || {});
  if (attrs.length) h += row("attributes", attrs.map(([k, v]) => esc(k) + "=" + esc(JSON.stringify(v))).join(", "));
  h += row("inputs", n.inputs.map(link).join(", ") || "none");
  h += row("consumers", n.consumers.map(link).join(", ") || "none");
  if (n.origin){
    const v = byId[n.origin.node];
    h += row("made by", 'the bprop of ' + link(n.origin.node) + ' for its input ' + n.origin.index + (n.origin.input ? ' (' + link(n.origin.input) + ')' : '') + ': the forward edge highlighted in the picture');
    if (n.origin.input) markEdge(n.origin.input, n.origin.node);
    mark(n.origin.node, "gc-forward");
  }
  if (n.entry_of) h += row("grad_table", "the entry for " + link(n.entry_of));
  if (n.program){
    const p = n.program;
    h += row("program", (p.step ? "step " + p.step : "not a step") + (p.buffer !== null && p.buffer !== undefined ? ", buffer " + esc(p.buffer) : "") + (p.recomputed ? ", recomputed" : "") + (p.kept ? ", kept for backward" : ""));
  }
  h += "</table>";
  if (n.formula){
    h += '<h2>formula</h2><div id="info-formula">' + n.formula + '</div>';
    if (n.formula_leaves) h += '<details><summary>in the leaves</summary>' + n.formula_leaves + '</details>';
  } else if (n.inputs.length){
    h += '<h2>formula</h2><p class="hint">not on this page (its expansion is large, it has no matrix form, or the ' +
      'time a large page gives its formulas was spent): ' +
      'gc.to_sympy(g["' + esc(n.name) + '"]) exports it</p>';
  }
  if (n.value){
    const v = n.value;
    h += '<h2>value</h2><div id="info-value">';
    if (v.numbers) h += '<pre>' + esc(v.numbers) + '</pre>';
    if (v.heatmap) h += v.heatmap;
    if (v.stats) h += '<table>' + Object.entries(v.stats).map(([k, x]) => row(k, x === null ? "-" : x)).join("") + '</table>';
    h += '</div>';
  }
  info.innerHTML = h;
}
info.addEventListener("click", e => { const id = e.target.dataset && e.target.dataset.id; if (id){ show(id); scrollTo(id); } });
stepBox.addEventListener("click", e => { const id = e.target.dataset && e.target.dataset.id; if (id){ show(id, true); } });
svg.addEventListener("click", e => {
  const g = e.target.closest("g.node"); if (!g) return;
  const t = g.querySelector("title"); if (t && byId[t.textContent]) show(t.textContent);
});
function scrollTo(id){ const g = gOf[id]; if (g && g.scrollIntoView) g.scrollIntoView({block: "center", inline: "center"}); }
// the stepper
const steps = data.steps || [];
let cur = -1, timer = null;
const peak = steps.length && steps[0].peak ? steps[0].peak : Math.max(0, ...steps.map(s => s.live || 0));
function memPlot(k){
  if (!steps.some(s => s.live !== undefined)) return "";
  const w = 360, hgt = 80, n = steps.length;
  let pts = steps.map((s, i) => (i * w / Math.max(1, n - 1)).toFixed(1) + "," + (hgt - (s.live || 0) / (peak || 1) * (hgt - 4)).toFixed(1)).join(" ");
  const x = (k * w / Math.max(1, n - 1)).toFixed(1);
  return '<svg class="memplot" width="' + w + '" height="' + hgt + '"><polyline fill="none" stroke="#1f5b99" points="' + pts + '"/><line x1="' + x + '" x2="' + x + '" y1="0" y2="' + hgt + '" stroke="#e6007e"/></svg>' +
    '<div id="live">live bytes after this step: ' + (steps[k].live || 0).toLocaleString() + ' (peak ' + peak.toLocaleString() + ')</div>';
}
function go(k){
  if (!steps.length) return;
  cur = Math.max(0, Math.min(steps.length - 1, k));
  const s = steps[cur];
  clearMarks();
  (s.highlight || []).forEach(id => mark(id, "gc-related"));
  (s.consumers || []).forEach(id => mark(id, "gc-related"));
  if (s.forward) mark(s.forward, "gc-forward");
  if (s.node) mark(s.node, "gc-current");
  document.getElementById("stepno").textContent = (cur + 1) + " / " + steps.length;
  let h = '<h2 id="step-title">' + esc(s.title) + '</h2><div class="eq" id="step-text">' + esc(s.text) + '</div>';
  if (s.forward) h += '<p>node v: ' + link(s.forward) + '; its consumers in G\u2032: ' + ((s.consumers || []).map(link).join(", ") || "none (v is the cost)") + '; grad_table entry: ' + link(s.node) + '</p>';
  stepBox.innerHTML = h;
  mem.innerHTML = memPlot(cur);
  if (s.node) { show(s.node, true); scrollTo(s.node); }
}
document.getElementById("next").onclick = () => go(cur + 1);
document.getElementById("prev").onclick = () => go(cur - 1);
document.getElementById("first").onclick = () => go(0);
document.getElementById("last").onclick = () => go(steps.length - 1);
document.getElementById("play").onclick = e => {
  if (timer){ clearInterval(timer); timer = null; e.target.textContent = "play"; return; }
  e.target.textContent = "pause";
  timer = setInterval(() => { if (cur >= steps.length - 1){ clearInterval(timer); timer = null; e.target.textContent = "play"; } else go(cur + 1); }, 700);
};
document.addEventListener("keydown", e => {
  if (e.target.tagName === "INPUT") return;
  if (e.key === "ArrowRight"){ go(cur + 1); e.preventDefault(); }
  else if (e.key === "ArrowLeft"){ go(cur - 1); e.preventDefault(); }
  else if (e.key === "Home"){ go(0); e.preventDefault(); }
  else if (e.key === "End"){ go(steps.length - 1); e.preventDefault(); }
});
const dl = document.getElementById("names");
data.nodes.forEach(n => { const o = document.createElement("option"); o.value = n.name; dl.appendChild(o); });
document.getElementById("search").addEventListener("change", e => { const n = byName[e.target.value]; if (n){ show(n.id); scrollTo(n.id); } });
document.getElementById("zoom").addEventListener("input", e => { svg.style.transform = "scale(" + (e.target.value / 100) + ")"; });
document.getElementById("stepno").textContent = "0 / " + steps.length;
window.gcExplorer = {data: data, go: go, show: show, current: () => cur};
document.body.dataset.ready = "1";
})();
