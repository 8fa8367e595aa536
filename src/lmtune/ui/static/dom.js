// What every script of the web app builds on: elements, calls to the app's server, and checks
// whose late answers are dropped. Values go in with textContent (never as HTML), so a file's or a
// run's text cannot run in the page.
"use strict";

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined && v !== false) el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : String(c));
  return el;
}

async function api(path, options = {}) {
  const response = await fetch(path, { headers: { "Content-Type": "application/json" }, ...options });
  const body = await response.json().catch(() => ({ error: `${response.status} ${response.statusText}` }));
  if (!response.ok) { const err = new Error(body.error || response.statusText); err.body = body; err.status = response.status; throw err; }
  return body;
}

const q = params => new URLSearchParams(Object.entries(params).filter(([, v]) => v !== "" && v !== null && v !== undefined)).toString();
const errorBox = message => h("div", { class: "error", role: "alert" }, message);

// A check whose answer is shown only if no later check was asked for meanwhile (answers can come back out of order).
function latestOnly(check) {
  let asked = 0;
  return async body => { const mine = ++asked; const result = await check(body); return mine === asked ? result : null; };
}
