// Small SVG charts for the app: line charts (curves over steps) and bar charts (counts).
// Written here rather than taken from a chart library so that the app ships no bundle and
// makes no request beyond its own server.
"use strict";

const COLORS = ["#2f6fdf", "#e67e22", "#1e8449", "#8e44ad", "#c0392b", "#16a085", "#7f8c8d", "#d4ac0d"];
const SVG = "http://www.w3.org/2000/svg";

function svgEl(name, attrs, text) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

function niceTicks(lo, hi, count) {
  if (!(hi > lo)) { hi = lo + 1; }
  const step = Math.pow(10, Math.floor(Math.log10((hi - lo) / count)));
  const unit = [1, 2, 5, 10].map(m => m * step).find(s => (hi - lo) / s <= count) || step * 10;
  const ticks = [];
  for (let t = Math.ceil(lo / unit) * unit; t <= hi + unit * 1e-9; t += unit) ticks.push(+t.toPrecision(12));
  return ticks;
}

function fmt(v) {
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e5) ? v.toExponential(1) : String(+v.toPrecision(4));
}

// series: [{name, points: [[x, y], ...]}]; draws into `box` (replacing what it held).
function lineChart(box, series, opts = {}) {
  const W = opts.width || 560, H = opts.height || 240, L = 52, R = 12, T = 12, B = 34;
  const pts = series.flatMap(s => s.points).filter(p => Number.isFinite(p[1]));
  box.replaceChildren();
  box.classList.add("chart");
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": opts.title || "chart" });
  svg.dataset.points = String(pts.length);
  if (!pts.length) {
    svg.appendChild(svgEl("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, opts.empty || "no points yet"));
    box.appendChild(svg);
    return;
  }
  let [x0, x1] = [Math.min(...pts.map(p => p[0])), Math.max(...pts.map(p => p[0]))];
  let [y0, y1] = [Math.min(...pts.map(p => p[1])), Math.max(...pts.map(p => p[1]))];
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  if (y1 === y0) { y0 -= Math.abs(y0) * 0.1 || 1; y1 += Math.abs(y1) * 0.1 || 1; }
  if (series.some(s => s.dots)) { const pad = (y1 - y0) * 0.06; y0 -= pad; y1 += pad; }  // marks clear of the edges
  const sx = x => L + (x - x0) / (x1 - x0) * (W - L - R);
  const sy = y => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  for (const t of niceTicks(y0, y1, 5)) {
    svg.appendChild(svgEl("line", { x1: L, x2: W - R, y1: sy(t), y2: sy(t), stroke: "#eceef2" }));
    svg.appendChild(svgEl("text", { x: L - 6, y: sy(t) + 4, "text-anchor": "end" }, fmt(t)));
  }
  for (const t of niceTicks(x0, x1, 6)) {
    svg.appendChild(svgEl("text", { x: sx(t), y: H - B + 16, "text-anchor": "middle" }, fmt(t)));
  }
  if (opts.xLabel) svg.appendChild(svgEl("text", { x: W - R, y: H - 4, "text-anchor": "end" }, opts.xLabel));
  svg.appendChild(svgEl("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, stroke: "#9aa1ae" }));
  series.forEach((s, i) => {
    const color = s.color || COLORS[i % COLORS.length];
    const good = s.points.filter(p => Number.isFinite(p[1]));
    // a scatter series (s.dots) is a group of marks; a line is a path, with marks while it has few points
    const d = good.map((p, j) => `${j ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join("");
    const mark = s.dots ? svgEl("g", { class: "series" }) : svgEl("path", { d, fill: "none", stroke: color, "stroke-width": 2, class: "series" });
    mark.dataset.name = s.name;
    mark.dataset.points = String(good.length);
    svg.appendChild(mark);
    if (s.dots || good.length < 30) for (const p of good) (s.dots ? mark : svg).appendChild(svgEl("circle", { cx: sx(p[0]), cy: sy(p[1]), r: s.dots ? 4.5 : 2.5, fill: color }));
  });
  box.appendChild(svg);
  const legend = document.createElement("div");
  legend.className = "legend";
  series.forEach((s, i) => {
    const item = document.createElement("span");
    const swatch = document.createElement("i");
    swatch.style.background = s.color || COLORS[i % COLORS.length];
    item.append(swatch, s.name);
    legend.appendChild(item);
  });
  box.appendChild(legend);
}

// Vertical bars: labels[i] with values[i].
function barChart(box, labels, values, opts = {}) {
  const W = opts.width || 560, H = opts.height || 220, L = 48, R = 10, T = 14, B = 44;
  box.replaceChildren();
  box.classList.add("chart");
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": opts.title || "bar chart" });
  const top = Math.max(1, ...values);
  const slot = (W - L - R) / Math.max(1, values.length);
  const sy = v => T + (1 - v / top) * (H - T - B);
  for (const t of niceTicks(0, top, 4)) {
    svg.appendChild(svgEl("line", { x1: L, x2: W - R, y1: sy(t), y2: sy(t), stroke: "#eceef2" }));
    svg.appendChild(svgEl("text", { x: L - 6, y: sy(t) + 4, "text-anchor": "end" }, fmt(t)));
  }
  values.forEach((v, i) => {
    const x = L + i * slot + slot * 0.12;
    const bar = svgEl("rect", { x, y: sy(v), width: slot * 0.76, height: H - B - sy(v), fill: opts.color || COLORS[0], class: "column" });
    bar.dataset.label = labels[i];
    bar.dataset.value = String(v);
    bar.appendChild(svgEl("title", {}, `${labels[i]}: ${v}`));
    svg.appendChild(bar);
    if (values.length <= 24 || i % Math.ceil(values.length / 12) === 0) {
      const name = String(labels[i]);
      svg.appendChild(svgEl("text", { x: x + slot * 0.38, y: H - B + 14, "text-anchor": "middle" }, name.length > 12 ? name.slice(0, 11) + "…" : name));
    }
  });
  if (opts.xLabel) svg.appendChild(svgEl("text", { x: W - R, y: H - 6, "text-anchor": "end" }, opts.xLabel));
  box.appendChild(svg);
}

// Horizontal bars, largest first: labels[i] (written in full at the left) with values[i] in [0, 1].
function hbarChart(box, labels, values, opts = {}) {
  const W = opts.width || 560, row = 26, L = Math.min(260, 12 + 7 * Math.max(4, ...labels.map(l => String(l).length))), R = 56;
  const H = 12 + row * Math.max(1, labels.length);
  box.replaceChildren();
  box.classList.add("chart");
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": opts.title || "bar chart" });
  const top = Math.max(1e-12, ...values);
  values.forEach((v, i) => {
    const y = 6 + i * row;
    svg.appendChild(svgEl("text", { x: L - 8, y: y + row / 2 + 4, "text-anchor": "end" }, String(labels[i])));
    const bar = svgEl("rect", { x: L, y: y + 4, width: Math.max(1, v / top * (W - L - R)), height: row - 8, fill: opts.color || COLORS[2], class: "column" });
    bar.dataset.label = labels[i];
    bar.dataset.value = String(v);
    svg.appendChild(bar);
    svg.appendChild(svgEl("text", { x: L + v / top * (W - L - R) + 6, y: y + row / 2 + 4 }, fmt(v)));
  });
  box.appendChild(svg);
}
