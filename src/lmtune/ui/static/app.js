// The lmtune web app: one page, routed by the URL's hash. Builds on dom.js (elements, calls,
// every value put in as text) and editor.js (the config editor of the New run and New search pages).
"use strict";

const main = document.getElementById("main");
let timer = null;  // the current page's refresh, cleared when the page changes

// counts (steps, examples, parameters) as whole numbers; scores with 4 significant digits
const metricText = (key, v) => v === undefined || v === null ? "" : /steps?$|parameters$|examples$/.test(key) ? String(Math.round(v)) : (+v).toPrecision(4);
const duration = s => s === null || s === undefined ? "" : s >= 3600 ? `${Math.floor(s / 3600)} h ${Math.round(s % 3600 / 60)} min` : s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s} s`;

function route() {
  clearInterval(timer);
  const [page, query] = (location.hash.slice(2) || "runs").split("?");
  const params = Object.fromEntries(new URLSearchParams(query || ""));
  const section = { run: "runs", compare: "runs", search: "searches", "new-search": "searches" }[page] || page;
  document.querySelectorAll("nav a").forEach(a => a.classList.toggle("active", a.dataset.page === section));
  main.replaceChildren();
  ({ data: dataPage, new: newRunPage, runs: runsPage, run: runPage, try: tryPage, compare: comparePage,
     searches: searchesPage, "new-search": newSearchPage, search: searchPage }[page] || runsPage)(params);
}
window.addEventListener("hashchange", route);

// ---- Data ------------------------------------------------------------------------------
async function dataPage(params) {
  const ws = await api("/api/workspace");
  const pick = h("select", { id: "data-file" }, h("option", { value: "" }, "choose a data file"), ws.data_files.map(f => h("option", { value: f }, f)));
  const upload = h("input", { type: "file", id: "data-upload", accept: ".csv,.tsv,.txt,.json,.jsonl,.ndjson,.parquet" });
  const text = h("input", { id: "data-text-column", placeholder: "text (auto)" });
  const label = h("input", { id: "data-label-column", placeholder: "label (auto)" });
  const model = h("input", { id: "data-model", placeholder: "model folder or hub id (for token lengths)", size: 40 });
  const maxLength = h("input", { id: "data-max-length", type: "number", value: 256, min: 1 });
  const out = h("div", { id: "data-summary" });
  const show = async () => {
    if (!pick.value) return;
    out.replaceChildren(h("p", { class: "muted" }, "reading…"));
    try {
      const info = await api("/api/data?" + q({ path: pick.value, text_column: text.value, label_column: label.value, model: model.value, max_length: maxLength.value }));
      out.replaceChildren(dataSummary(info));
    } catch (err) { out.replaceChildren(errorBox(err.message)); }
  };
  upload.addEventListener("change", async () => {
    const file = upload.files[0];
    if (!file) return;
    if (file.size > ws.max_upload_bytes) { out.replaceChildren(errorBox(`${file.name} is ${file.size.toLocaleString()} bytes; the limit is ${ws.max_upload_bytes.toLocaleString()}`)); return; }
    try {
      const saved = await api("/api/upload?" + q({ name: file.name }), { method: "PUT", body: file, headers: { "Content-Type": "application/octet-stream" } });
      pick.append(h("option", { value: saved.path }, saved.path));
      pick.value = saved.path;
      show();
    } catch (err) { out.replaceChildren(errorBox(err.message)); }
  });
  pick.addEventListener("change", show);
  main.append(h("h1", {}, "Data"), h("div", { class: "card" }, h("div", { class: "row" },
    h("div", {}, h("label", { for: "data-file" }, "file in the workspace"), pick),
    h("div", {}, h("label", { for: "data-upload" }, "or upload one"), upload),
    h("div", {}, h("label", {}, "text column"), text), h("div", {}, h("label", {}, "label column"), label),
    h("div", {}, h("label", {}, "model"), model), h("div", {}, h("label", {}, "model.max_length"), maxLength),
    h("button", { id: "data-show", onclick: show }, "Show"))), out);
  if (params.path) {
    if (![...pick.options].some(o => o.value === params.path)) pick.append(h("option", { value: params.path }, params.path));
    pick.value = params.path;
    show();
  }
}

function dataSummary(info) {
  const parts = [h("p", { id: "data-shape" }, `${info.path}: ${info.rows.toLocaleString()} rows, columns ${info.columns.join(", ")}`)];
  const charts = h("div", { class: "cols" });
  if (info.labels) {
    const box = h("div", { id: "label-chart" });
    barChart(box, Object.keys(info.labels.counts), Object.values(info.labels.counts), { title: "labels" });
    charts.append(h("div", { class: "card" }, h("h2", {}, `Labels (column ${info.labels.column})`), box,
      info.labels.warning ? h("div", { class: "warning", id: "label-warning" }, info.labels.warning) : null));
  }
  if (info.lengths) {
    const l = info.lengths, box = h("div", { id: "length-chart" });
    barChart(box, l.counts.map((_, i) => `${Math.round(l.edges[i])}`), l.counts, { title: "text lengths", xLabel: "tokens", color: "#16a085" });
    charts.append(h("div", { class: "card" }, h("h2", {}, `Length in tokens (column ${l.column})`), box,
      h("p", { id: "truncated" }, `mean ${l.mean}, longest ${l.max}; ${l.truncated} of ${info.rows} rows are longer than model.max_length=${l.max_length} and would be cut`)));
  }
  parts.push(charts);
  parts.push(h("div", { class: "card" }, h("h2", {}, "First rows"), h("table", { id: "data-head" },
    h("tr", {}, info.columns.map(c => h("th", {}, c))),
    info.head.map(row => h("tr", {}, info.columns.map(c => h("td", {}, row[c] === null ? "" : String(row[c]))))))));
  return h("div", {}, parts);
}

// ---- New run ---------------------------------------------------------------------------
async function newRunPage() {
  const ws = await api("/api/workspace");
  const task = h("select", { id: "task" }, ws.tasks.map(t => h("option", { value: t }, t)));
  const runName = h("input", { id: "run-name", value: `runs/run-${new Date().toISOString().slice(0, 19).replace(/[-:T]/g, "")}`, size: 34 });
  const form = h("div", { id: "form" });
  const yamlBox = h("textarea", { id: "yaml", spellcheck: "false" });
  const messages = h("div", { id: "form-messages" });
  const launch = h("button", { id: "launch" }, "Launch");
  const loadFile = h("input", { type: "file", id: "yaml-file", accept: ".yaml,.yml" });
  const save = h("button", { class: "plain", id: "yaml-save" }, "Save YAML");
  let fields = [];

  const formConfig = () => {
    const config = { task: task.value };
    for (const f of fields) {
      const value = fieldValue(f, form);
      if (value === undefined) continue;
      const [section, key] = f.key.split(".");
      (config[section] = config[section] || {})[key] = value;
    }
    return config;
  };
  const buildForm = async () => {
    const spec = await api("/api/form?" + q({ task: task.value }));
    fields = spec.sections.flatMap(s => s.fields);
    form.replaceChildren(...spec.sections.map(s => h("div", { class: "card" }, h("h2", {}, s.name),
      s.fields.filter(f => f.main).map(fieldBox),
      h("details", {}, h("summary", {}, "more keys"), s.fields.filter(f => !f.main).map(fieldBox)))));
    editor.watch(form);
  };
  const editor = configEditor({
    fields: form, yamlBox, messages, launch, checkPath: "/api/config/check",
    formBody: () => ({ config: formConfig() }),
    fillForm: async result => {
      if (result.config.task && result.config.task !== task.value && ws.tasks.includes(result.config.task)) { task.value = result.config.task; await buildForm(); }
      for (const f of fields) { const [section, key] = f.key.split("."); showValue(f, form, (result.config[section] || {})[key]); }
    },
    start: { path: "/api/runs", body: () => ({ yaml: yamlBox.value, run: runName.value }), then: started => { location.hash = "#/run?" + q({ path: started.run }); } },
  });
  task.addEventListener("change", async () => { await buildForm(); editor.fromForm(); });
  loadFile.addEventListener("change", async () => { if (loadFile.files[0]) { yamlBox.value = await loadFile.files[0].text(); editor.fromYaml(); } });
  save.addEventListener("click", () => {
    const link = h("a", { href: URL.createObjectURL(new Blob([yamlBox.value], { type: "text/yaml" })), download: "config.yaml" });
    link.click();
  });
  main.append(h("h1", {}, "New run"), h("div", { class: "card row" },
    h("div", {}, h("label", { for: "task" }, "task"), task),
    h("div", {}, h("label", { for: "run-name" }, "run folder (in the workspace)"), runName),
    h("div", {}, h("label", { for: "yaml-file" }, "load a YAML file"), loadFile), save, launch), messages,
    h("div", { class: "cols" }, form, h("div", {}, h("div", { class: "card" }, h("h2", {}, "config.yaml"), yamlBox))));
  await buildForm();
  await editor.fromForm();
}

// ---- Runs ------------------------------------------------------------------------------
function progressCell(r) {
  if (r.fraction === null || r.fraction === undefined) return h("td", {}, r.step ? `step ${r.step}` : "");
  return h("td", {}, h("span", { class: "bar" }, h("span", { style: `width:${Math.round(r.fraction * 100)}%` })), ` ${r.step}/${r.total_steps}`,
    r.eta_s !== null && r.eta_s !== undefined ? h("span", { class: "muted" }, ` · ${duration(r.eta_s)} left`) : null);
}

async function runsPage() {
  const table = h("table", { id: "runs" });
  const unfolded = new Set();  // the searches whose trials are shown
  const out = h("div", {});
  const refresh = async () => {
    try {
      const rows = await api("/api/runs");
      const metricKeys = [...new Set(rows.flatMap(r => Object.keys(r.metrics || {})))].filter(k => !/parameters|seconds|per_s/.test(k)).slice(0, 4);
      const chosen = new Set([...table.querySelectorAll("input.pick:checked")].map(c => c.value));
      const runRow = (r, trial) => h("tr", { "data-run": r.path, class: trial ? "trial" : "" },
        h("td", {}, h("input", { type: "checkbox", class: "pick", value: r.path, checked: chosen.has(r.path), "aria-label": `compare ${r.path}` })),
        h("td", {}, h("a", { href: "#/run?" + q({ path: r.path }) }, trial ? r.path.slice(r.search.length + 1) : r.path)),
        h("td", {}, h("span", { class: `status ${r.status}` }, r.status)),
        h("td", {}, r.task || ""), h("td", {}, r.model ? String(r.model).split("/").slice(-2).join("/") : ""), h("td", {}, r.method || ""),
        progressCell(r), metricKeys.map(k => h("td", { class: "num" }, metricText(k, r.metrics[k]))));
      // a search's trials sit under one row for the search, folded until opened; it stands where its newest trial would
      const bySearch = new Map();
      rows.filter(r => r.search).forEach(r => bySearch.set(r.search, [...(bySearch.get(r.search) || []), r]));
      const listed = [], placed = new Set();
      for (const r of rows) {
        if (!r.search) { listed.push(runRow(r, false)); continue; }
        if (placed.has(r.search)) continue;
        placed.add(r.search);
        const trials = bySearch.get(r.search), open = unfolded.has(r.search);
        const states = [...new Set(trials.map(t => t.status))].map(st => `${trials.filter(t => t.status === st).length} ${st}`).join(", ");
        listed.push(h("tr", { class: "search-group", "data-search": r.search },
          h("td", {}, h("button", { class: "plain fold", "aria-expanded": String(open), "aria-label": `${open ? "fold" : "unfold"} ${r.search}`,
            onclick: () => { open ? unfolded.delete(r.search) : unfolded.add(r.search); refresh(); } }, open ? "▾" : "▸")),
          h("td", {}, h("a", { href: "#/search?" + q({ path: r.search }) }, r.search), h("span", { class: "muted" }, ` · search, ${trials.length} runs`)),
          h("td", { colspan: 5 + metricKeys.length, class: "muted" }, states)));
        if (open) listed.push(...trials.map(t => runRow(t, true)));
      }
      table.replaceChildren(h("tr", {}, ["", "run", "status", "task", "model", "method", "progress", ...metricKeys].map(c => h("th", {}, c))), ...listed);
      out.replaceChildren(rows.length ? table : h("p", { class: "muted" }, "No runs in this workspace yet: start one on New run, or with lmtune train."));
    } catch (err) { out.replaceChildren(errorBox(err.message)); }
  };
  const compare = h("button", { id: "compare", class: "plain", onclick: () => {
    const paths = [...table.querySelectorAll("input.pick:checked")].map(c => c.value);
    if (paths.length >= 2) location.hash = "#/compare?" + q({ paths: paths.join(",") });
  } }, "Compare the checked runs");
  main.append(h("h1", {}, "Runs"), h("div", { class: "card" }, out, h("p", {}, compare)));
  await refresh();
  timer = setInterval(refresh, 2000);
}

async function runPage(params) {
  const path = params.path;
  const head = h("div", { class: "card", id: "run-head" });
  const curves = h("div", { class: "cols" });
  const lossBox = h("div", { id: "loss-chart" }), metricBox = h("div", { id: "metric-chart" });
  curves.append(h("div", { class: "card" }, h("h2", {}, "Loss"), lossBox), h("div", { class: "card" }, h("h2", {}, "Validation metrics"), metricBox));
  const log = h("pre", { class: "log", id: "log" });
  const report = h("div", { id: "report" });
  const config = h("pre", { class: "report", id: "run-config" });  // folded: it is long
  const messages = h("div", {});
  main.append(h("h1", {}, path), head, messages, curves, h("div", { class: "card" }, h("h2", {}, "Log"), log), report,
    h("div", { class: "card" }, h("details", {}, h("summary", {}, "config.yaml (resolved)"), config)));
  let shownReport = null, reportChecks = 0;
  const act = async what => {
    try { await api(`/api/run/${what}?` + q({ path }), { method: "POST" }); messages.replaceChildren(); refresh(); }
    catch (err) { messages.replaceChildren(errorBox(err.message)); }
  };
  const refresh = async () => {
    let r;
    try { r = await api("/api/run?" + q({ path })); } catch (err) { messages.replaceChildren(errorBox(err.message)); return; }
    const running = r.status === "running" || r.status === "starting";
    head.replaceChildren(h("div", { class: "row" },
      h("span", { class: `status ${r.status}`, id: "run-status", title: r.reason || "" }, r.status),
      h("span", {}, [r.task, r.method, r.model].filter(Boolean).join(" · ")),
      h("table", { style: "width:auto" }, h("tr", {}, progressCell(r))),
      r.reason ? h("span", { class: "muted", id: "run-reason" }, r.reason) : null,
      h("button", { id: "stop", class: "plain", disabled: !(running && r.started_here), onclick: () => act("stop") }, "Stop"),
      h("button", { id: "resume", class: "plain", disabled: !r.resumable, onclick: () => act("resume") }, "Resume"),
      r.model_folder ? h("a", { id: "try-link", href: "#/try?" + q({ path }) }, "try it") : null,
      r.model_folder ? h("a", { id: "download", href: "/api/run/download?" + q({ path }) }, `download ${r.model_folder.split("/").pop()}/ (zip)`) : null));
    const history = r.history || [];
    const train = history.filter(x => x.type === "train" && x.loss !== null);
    const evals = history.filter(x => x.type === "eval");
    lineChart(lossBox, [{ name: "train loss", points: train.map(x => [x.step, x.loss]) },
      { name: "validation loss", points: evals.filter(x => typeof x.loss === "number").map(x => [x.step, x.loss]) }], { xLabel: "step", title: "loss" });
    const keys = [...new Set(evals.flatMap(x => Object.keys(x)))].filter(k => !["type", "step", "epoch", "seconds", "loss"].includes(k) && !/per_s|seconds/.test(k) && evals.some(x => typeof x[k] === "number"));
    lineChart(metricBox, keys.map(k => ({ name: k, points: evals.filter(x => typeof x[k] === "number").map(x => [x.step, x[k]]) })), { xLabel: "step", title: "evaluation", empty: "no evaluation yet" });
    log.textContent = [...(r.log_tail || []), ...(r.job_output || [])].join("\n");
    log.scrollTop = log.scrollHeight;
    config.textContent = r.config_yaml || "";
    if (r.report && r.report !== shownReport) {
      shownReport = r.report;
      const rendered = h("div", { class: "report-html", id: "report-text" });
      rendered.innerHTML = r.report;  // rendered by the server from report.md, its raw HTML escaped
      report.replaceChildren(h("div", { class: "card" }, h("h2", {}, "Report"), rendered));
    }
    // a run started elsewhere is finished at metrics.json, a moment before its report: look again a few times
    const awaitingReport = r.status === "finished" && !r.report && ++reportChecks <= 10;
    if (!running && !awaitingReport && timer) { clearInterval(timer); timer = null; }
    if ((running || awaitingReport) && !timer) timer = setInterval(refresh, 1500);
  };
  await refresh();
}

// ---- Compare -------------------------------------------------------------------------------
async function comparePage(params) {
  const paths = (params.paths || "").split(",").filter(Boolean);
  let c;
  try { c = await api("/api/compare?" + q({ paths: paths.join(",") })); } catch (err) { main.append(errorBox(err.message)); return; }
  const metricNames = [...new Set(c.runs.flatMap(r => Object.keys(r.metrics)))];
  const table = h("table", { id: "compare-metrics" }, h("tr", {}, h("th", {}, "metric"), c.runs.map(r => h("th", {}, r.path))),
    ...metricNames.map(m => h("tr", {}, h("td", {}, m), c.runs.map(r => h("td", { class: "num" }, metricText(m, r.metrics[m]))))));
  const diff = h("table", { id: "compare-config" }, h("tr", {}, h("th", {}, "key"), c.runs.map(r => h("th", {}, r.path))),
    ...Object.entries(c.differences).map(([key, values]) => h("tr", { "data-key": key }, h("td", {}, key), values.map(v => h("td", {}, JSON.stringify(v))))));
  const loss = h("div", { id: "compare-loss" }), metric = h("div", { id: "compare-metric" });
  const train = r => r.history.filter(x => x.type === "train" && x.loss !== null).map(x => [x.step, x.loss]);
  lineChart(loss, c.runs.map(r => ({ name: r.path, points: train(r) })), { xLabel: "step", title: "training loss" });
  lineChart(metric, c.runs.map(r => ({ name: `${r.path} ${r.metric}`, points: r.history.filter(x => x.type === "eval" && typeof x[r.metric] === "number").map(x => [x.step, x[r.metric]]) })), { xLabel: "step", title: "validation metric" });
  main.append(h("h1", {}, `Compare ${c.runs.length} runs`),
    h("div", { class: "cols" }, h("div", { class: "card" }, h("h2", {}, "Training loss"), loss), h("div", { class: "card" }, h("h2", {}, "Validation metric"), metric)),
    h("div", { class: "card" }, h("h2", {}, "Final metrics"), table),
    h("div", { class: "card" }, h("h2", {}, "Config keys that differ"), Object.keys(c.differences).length ? diff : h("p", { class: "muted" }, "none: the configs are the same")));
}

// ---- Search ------------------------------------------------------------------------------
const trialCounts = counts => Object.entries(counts || {}).map(([state, n]) => `${n} ${state}`).join(", ");
const card = (title, ...body) => h("div", { class: "card" }, h("h2", {}, title), ...body);

async function searchesPage() {
  const out = h("div", {});
  const refresh = async () => {
    try {
      const rows = await api("/api/searches");
      out.replaceChildren(rows.length ? h("table", { id: "searches" },
        h("tr", {}, ["search", "status", "metric", "trials", "best", "best trial"].map(c => h("th", {}, c))),
        ...rows.map(r => h("tr", { "data-search": r.path },
          h("td", {}, h("a", { href: "#/search?" + q({ path: r.path }) }, r.path)),
          h("td", {}, h("span", { class: `status ${r.status}` }, r.status)),
          h("td", {}, r.metric ? `${r.metric} (${r.direction})` : ""), h("td", {}, trialCounts(r.counts)),
          h("td", { class: "num" }, r.best_value === null || r.best_value === undefined ? "" : metricText(r.metric, r.best_value)),
          h("td", {}, r.best_trial ?? ""))))
        : h("p", { class: "muted" }, "No searches in this workspace yet: start one on New search, or with lmtune search."));
    } catch (err) { out.replaceChildren(errorBox(err.message)); }
  };
  main.append(h("h1", {}, "Searches"), h("p", {}, h("a", { href: "#/new-search", id: "new-search" }, "New search")), h("div", { class: "card" }, out));
  await refresh();
  timer = setInterval(refresh, 3000);
}

// A typed value from a text box: numbers and true/false as such, the rest as text.
const typedValue = text => { const v = text.trim(); return v === "true" ? true : v === "false" ? false : v !== "" && !isNaN(Number(v)) ? Number(v) : v; };

async function newSearchPage() {
  const runs = (await api("/api/runs")).filter(r => r.task);
  const from = h("select", { id: "search-from" }, h("option", { value: "" }, "a run's config…"), runs.map(r => h("option", { value: r.path }, r.path)));
  const folder = h("input", { id: "search-folder", value: `searches/search-${new Date().toISOString().slice(0, 19).replace(/[-:T]/g, "")}`, size: 34 });
  const yamlBox = h("textarea", { id: "search-yaml", spellcheck: "false", placeholder: "the base config every trial starts from (or pick a run's config above)" });
  const settings = h("div", { id: "search-settings" });
  const rows = h("div", { id: "space-rows" });
  const spaceProblem = h("div", { class: "problem", id: "space-problem" });
  const keyList = h("datalist", { id: "search-keys" });
  const messages = h("div", { id: "search-messages" });
  const launch = h("button", { id: "search-launch" }, "Start the search");
  const page = h("div", {}, h("div", { class: "cols" },
    h("div", {}, card("Space: the keys to search", rows, spaceProblem, h("p", {}, h("button", { class: "plain", id: "space-add", onclick: () => addRow() }, "Add a key"))),
      card("Search settings", settings)),
    h("div", {}, card("config.yaml: the base config and its search section", yamlBox))));
  let settingFields = [], kinds = {}, task = null;
  const defaultTask = (await api("/api/workspace")).default_task;  // a config without `task:` fine-tunes for it

  const guessType = key => ({ float: "float", int: "int" })[kinds[key]] || "categorical";
  const addRow = (key = "", spec = {}) => {
    const input = (cls, attrs) => h("input", { class: cls, ...attrs });
    const keyIn = input("sp-key", { list: "search-keys", value: key, placeholder: "config key, e.g. train.learning_rate", size: 26, "aria-label": "searched key" });
    const type = h("select", { class: "sp-type", "aria-label": "distribution" }, ["float", "int", "categorical"].map(t => h("option", { value: t, selected: t === (spec.type || guessType(key)) }, t)));
    const low = input("sp-low", { type: "number", step: "any", value: spec.low ?? "", placeholder: "low", "aria-label": "low" });
    const high = input("sp-high", { type: "number", step: "any", value: spec.high ?? "", placeholder: "high", "aria-label": "high" });
    const log = input("sp-log", { type: "checkbox", checked: !!spec.log, "aria-label": "log scale" });
    const step = input("sp-step", { type: "number", step: "any", value: spec.step ?? "", placeholder: "grid step", "aria-label": "step" });
    const choices = input("sp-choices", { value: (spec.choices || []).map(String).join(", "), placeholder: "choices, comma-separated", size: 24, "aria-label": "choices" });
    const when = input("sp-when", { value: Object.entries(spec.when || {}).map(([k, v]) => `${k}=${v}`).join(", "), placeholder: "only when, e.g. method.name=lora", size: 24, "aria-label": "when" });
    const range = h("span", { class: "sp-range" }, low, high, h("label", { class: "inline" }, log, " log"), step);
    const row = h("div", { class: "space-row field", "data-key": `search.space.${key}` },
      h("div", { class: "row" }, keyIn, type, h("button", { class: "plain sp-remove", onclick: () => { row.remove(); editor.fromForm(); } }, "remove")),
      h("div", { class: "row" }, range, choices, when), h("div", { class: "problem" }));
    const shape = () => { const categorical = type.value === "categorical"; range.hidden = categorical; choices.hidden = !categorical; };
    keyIn.addEventListener("change", () => { row.dataset.key = `search.space.${keyIn.value.trim()}`; if (!spec.type) type.value = guessType(keyIn.value.trim()); shape(); });
    type.addEventListener("change", shape);
    editor.watch(row);
    shape();
    rows.append(row);
    return row;
  };
  const rowSpec = row => {
    const get = cls => row.querySelector(cls);
    const spec = { type: get(".sp-type").value };
    if (spec.type === "categorical") spec.choices = get(".sp-choices").value.split(",").filter(c => c.trim()).map(typedValue);
    else {
      for (const end of ["low", "high", "step"]) if (get(`.sp-${end}`).value !== "") spec[end] = Number(get(`.sp-${end}`).value);
      if (get(".sp-log").checked) spec.log = true;
    }
    const when = get(".sp-when").value.split(",").filter(w => w.includes("="));
    if (when.length) spec.when = Object.fromEntries(when.map(w => [w.slice(0, w.indexOf("=")).trim(), typedValue(w.slice(w.indexOf("=") + 1))]));
    return spec;
  };
  const formSearch = () => {
    const search = {};
    for (const f of settingFields) {
      const value = fieldValue(f, settings);
      if (value !== undefined) search[f.key.split(".")[1]] = value;
    }
    search.space = Object.fromEntries([...rows.children].map(r => [r.querySelector(".sp-key").value.trim(), rowSpec(r)]).filter(([k]) => k));
    return search;
  };
  const useTask = async name => {  // the keys one can search, and their kinds, are the task's
    if (name === task) return;
    task = name;
    const spec = await api("/api/form?" + q({ task: name }));
    kinds = Object.fromEntries(spec.sections.flatMap(s => s.fields).map(f => [f.key, f.kind]));
    keyList.replaceChildren(...Object.keys(kinds).map(k => h("option", { value: k })));
  };
  const editor = configEditor({
    fields: page, yamlBox, messages, launch, checkPath: "/api/search/check", spots: { "search.space": spaceProblem },
    formBody: () => ({ yaml: yamlBox.value, search: formSearch() }),
    afterForm: result => useTask(result.config.task || defaultTask),
    fillForm: async result => {
      await useTask(result.config.task || defaultTask);
      const search = result.config.search || {};
      if (!Object.keys(search.space || {}).length) return false;  // a base config alone: checked with the form's search
      for (const f of settingFields) showValue(f, settings, search[f.key.split(".")[1]]);
      rows.replaceChildren();
      for (const [key, spec] of Object.entries(search.space)) addRow(key, spec);
    },
    start: { path: "/api/searches", body: () => ({ yaml: yamlBox.value, search: formSearch(), folder: folder.value }),
             then: started => { location.hash = "#/search?" + q({ path: started.search }); } },
  });
  const spec = await api("/api/form?" + q({ sections: "search" }));
  settingFields = spec.sections.flatMap(s => s.fields).filter(f => f.main);
  settings.replaceChildren(...settingFields.map(fieldBox));
  editor.watch(settings);
  settings.querySelector('[name="search.n_trials"]').value = "8";
  from.addEventListener("change", async () => {
    if (!from.value) return;
    try { yamlBox.value = (await api("/api/run?" + q({ path: from.value }))).config_yaml || ""; editor.fromForm(); }
    catch (err) { messages.replaceChildren(errorBox(err.message)); }
  });
  main.append(h("h1", {}, "New search"), keyList, h("div", { class: "card row" },
    h("div", {}, h("label", { for: "search-from" }, "start from"), from),
    h("div", {}, h("label", { for: "search-folder" }, "search folder (in the workspace)"), folder), launch), messages, page);
  addRow("train.learning_rate", { type: "float", low: 1e-5, high: 1e-3, log: true });
  await editor.fromForm();
}

async function searchPage(params) {
  const path = params.path;
  const head = h("div", { class: "card", id: "search-head" });
  const historyBox = h("div", { id: "search-history" }), importanceBox = h("div", { id: "search-importances" });
  const table = h("table", { id: "search-trials" });
  const best = h("pre", { class: "report", id: "search-best" });
  const output = h("pre", { class: "log", id: "search-output" });
  const messages = h("div", {});
  const more = h("input", { id: "search-more-n", type: "number", value: 4, min: 1, style: "min-width:60px;width:70px", "aria-label": "trials to add" });
  main.append(h("h1", {}, path), head, messages,
    h("div", { class: "cols" }, card("Trials and the best so far", historyBox), card("Parameter importances (fANOVA)", importanceBox)),
    card("Trials", table), h("div", { class: "card" }, h("details", {}, h("summary", {}, "best.yaml: the best trial's config (lmtune train it to retrain)"), best)),
    h("div", { class: "card", hidden: true, id: "search-output-card" }, h("h2", {}, "Output"), output));
  const act = async (what, extra = {}) => {
    try { await api(`/api/search/${what}?` + q({ path, ...extra }), { method: "POST" }); messages.replaceChildren(); refresh(); }
    catch (err) { messages.replaceChildren(errorBox(err.message)); }
  };
  const refresh = async () => {
    let s;
    try { s = await api("/api/search?" + q({ path })); } catch (err) { messages.replaceChildren(errorBox(err.message)); return; }
    const running = s.status === "running" || s.status === "starting";
    head.replaceChildren(h("div", { class: "row" },
      h("span", { class: `status ${s.status}`, id: "search-status" }, s.status),
      h("span", {}, s.metric ? `${s.direction} ${s.metric}` : "reading the data…"), h("span", { class: "muted", id: "search-counts" }, trialCounts(s.counts)),
      s.best_value !== null ? h("span", { id: "search-best-value" }, `best ${s.metric} `, h("b", {}, metricText(s.metric, s.best_value)), ` (trial ${s.best_trial})`) : null,
      h("button", { id: "search-stop", class: "plain", disabled: !(running && s.started_here), onclick: () => act("stop") }, "Stop"),
      h("span", {}, more, " ", h("button", { id: "search-more", class: "plain", disabled: !s.can_add, onclick: () => act("more", { n_trials: more.value }) }, "Add trials"))));
    const trials = s.trials || [];
    const complete = trials.filter(t => t.state === "complete" && t.value !== null);
    const pruned = trials.filter(t => t.state === "pruned" && t.last_value !== null);
    const stepped = [];  // the best so far, held until the next better trial and on to the last trial
    for (const [n, v] of s.best_so_far || []) { if (stepped.length) stepped.push([n, stepped[stepped.length - 1][1]]); stepped.push([n, v]); }
    if (stepped.length && trials.length) stepped.push([trials[trials.length - 1].number, stepped[stepped.length - 1][1]]);
    lineChart(historyBox, [{ name: `${s.metric || "value"} of complete trials`, dots: true, points: complete.map(t => [t.number, t.value]) },
      ...(pruned.length ? [{ name: "pruned (its value when stopped)", dots: true, color: "#9aa1ae", points: pruned.map(t => [t.number, t.last_value]) }] : []),
      { name: "best so far", color: "#c0392b", points: stepped }], { xLabel: "trial", title: "optimization history", empty: "no trial has finished yet" });
    const names = Object.keys(s.importances || {});
    if (names.length) hbarChart(importanceBox, names, names.map(n => s.importances[n]), { title: "parameter importances" });
    else importanceBox.replaceChildren(h("p", { class: "muted" }, "needs two or more complete trials with different values"));
    const keys = [...new Set(trials.flatMap(t => Object.keys(t.params)))];
    table.replaceChildren(h("tr", {}, ["trial", "state", s.metric || "value", "seconds", ...keys, "run", ""].map(c => h("th", {}, c))),
      ...trials.map(t => h("tr", { "data-trial": t.number, class: t.number === s.best_trial ? "best" : "" },
        h("td", {}, String(t.number)), h("td", {}, h("span", { class: `status ${{ complete: "finished", fail: "failed" }[t.state] || t.state}` }, t.state)),
        h("td", { class: "num" }, t.value !== null ? metricText(s.metric, t.value) : t.last_value !== null ? h("span", { class: "muted" }, `${metricText(s.metric, t.last_value)} at step ${t.last_step}`) : ""),
        h("td", { class: "num" }, t.seconds === null ? "" : String(Math.round(t.seconds))),
        keys.map(k => h("td", {}, k in t.params ? (typeof t.params[k] === "number" ? String(+t.params[k].toPrecision(4)) : String(t.params[k])) : "–")),
        h("td", {}, t.run ? h("a", { href: "#/run?" + q({ path: t.run }) }, t.run.split("/").pop()) : ""),
        h("td", { class: "muted" }, t.error || ""))));
    best.textContent = s.best_yaml || "no trial has completed yet";
    document.getElementById("search-output-card").hidden = !(s.job_output || []).length;
    output.textContent = (s.job_output || []).join("\n");
    if (!running && timer) { clearInterval(timer); timer = null; }
    if (running && !timer) timer = setInterval(refresh, 2000);
  };
  await refresh();
}

// ---- Try ---------------------------------------------------------------------------------
// Calls go to the run's own `lmtune serve` process, passed on by the app: what a client gets.
async function tryPage(params) {
  const runs = (await api("/api/runs")).filter(r => r.model_folder);
  const pick = h("select", { id: "try-run" }, h("option", { value: "" }, "choose a run with a saved model"), runs.map(r => h("option", { value: r.path }, `${r.path} (${r.task}, ${r.status})`)));
  const load = h("button", { id: "try-load" }, "Load");
  const state = h("span", { id: "try-state", class: "muted" });
  const area = h("div", { id: "try-area" });
  main.append(h("h1", {}, "Try"), h("div", { class: "card row" }, h("div", {}, h("label", { for: "try-run" }, "run"), pick), load, state), area);
  const call = (endpoint, body) => api("/api/try/call?" + q({ path: pick.value, endpoint }), { method: "POST", body: JSON.stringify(body) });
  load.addEventListener("click", async () => {
    if (!pick.value) return;
    const path = pick.value;
    area.replaceChildren();
    state.textContent = "loading the model…";
    try {
      let s = await api("/api/try/load?" + q({ path }), { method: "POST" });
      for (let i = 0; s.state !== "ready" && i < 600 && pick.value === path; i++) {
        await new Promise(r => setTimeout(r, 300));
        s = await api("/api/try/status?" + q({ path }));
      }
      if (s.state !== "ready") return;
      state.textContent = `ready: ${s.model} (${s.task}${s.adapter ? ", adapter" : ""}) on ${s.device}`;
      const panel = { predict: predictPanel, chat: chatPanel, reply: replyPanel }[s.panel];  // the kind the run's task declares
      area.replaceChildren(panel ? panel(call, s) : errorBox(`this app has no Try panel of kind ${s.panel} (task ${s.task})`));
    } catch (err) { state.textContent = ""; area.replaceChildren(errorBox(err.message)); }
  });
  if (params.path) { pick.value = params.path; load.click(); }
}

// The model's inputs (from its /health), one box each, posted as one-entry lists to its endpoint;
// each field of the prediction is shown, and class probabilities as bars.
function predictPanel(call, s) {
  const fields = Object.entries(s.inputs || {});
  const boxes = fields.map(([name, help]) => h("textarea", { id: `try-${name}`, style: "min-height:70px", placeholder: help }));
  const out = h("div", { id: "try-result" });
  const action = s.endpoint.split("/").pop();
  const shown = v => v === null || v === undefined ? "none" : Array.isArray(v) ? v.join(", ") : typeof v === "number" ? String(+v.toPrecision(4)) : String(v);
  const go = h("button", { id: `try-${action}`, onclick: async () => {
    try {
      const body = Object.fromEntries(fields.map(([name], i) => [name + "s", [boxes[i].value]]));
      const p = (await call(s.endpoint, body)).predictions[0];
      const parts = Object.entries(p).filter(([k]) => k !== "probabilities").map(([k, v]) => h("p", {}, `${k}: `, h("b", { id: `try-out-${k}` }, shown(v))));
      if (p.probabilities) {
        const box = h("div", { id: "try-probabilities", style: "max-width:560px" });
        const names = Object.keys(p.probabilities).sort((a, b) => p.probabilities[b] - p.probabilities[a]);
        barChart(box, names, names.map(n => +p.probabilities[n].toFixed(4)), { title: "probabilities", height: 180 });
        parts.push(box);
      }
      out.replaceChildren(...parts);
    } catch (err) { out.replaceChildren(errorBox(err.message)); }
  } }, action[0].toUpperCase() + action.slice(1));
  return h("div", { class: "card" }, ...fields.flatMap(([name], i) => [h("label", { for: boxes[i].id }, name), boxes[i]]), h("p", {}, go), out);
}

// One text in, one reply out: the text is wrapped in the run's prompt (a translation run's
// instruction) as training wrapped it, and sent as the user's message.
function replyPanel(call, s) {
  const text = h("textarea", { id: "try-text", style: "min-height:90px", placeholder: s.prompt_template ? "the text (sent inside the run's instruction, as in training)" : "the text" });
  const maxTokens = h("input", { id: "try-max-tokens", type: "number", value: 64, min: 1 });
  const out = h("pre", { id: "try-result", class: "report" });
  const go = h("button", { id: "try-reply", onclick: async () => {
    const content = s.prompt_template ? s.prompt_template.split("{text}").join(text.value) : text.value;
    try { out.textContent = (await call(s.endpoint, { messages: [{ role: "user", content }], max_tokens: +maxTokens.value, temperature: 0 })).choices[0].message.content; }
    catch (err) { out.replaceChildren(errorBox(err.message)); }
  } }, "Reply");
  return h("div", { class: "card" }, text, h("div", { class: "row" }, h("div", {}, h("label", { for: "try-max-tokens" }, "max tokens"), maxTokens)), h("p", {}, go), out);
}

function chatPanel(call, s) {
  const history = [];
  const system = h("input", { id: "try-system", placeholder: "system prompt (optional)", style: "width:100%" });
  const temperature = h("input", { id: "try-temperature", type: "number", value: 0, min: 0, max: 2, step: 0.1 });
  const topP = h("input", { id: "try-top-p", type: "number", value: 1, min: 0.01, max: 1, step: 0.05 });
  const maxTokens = h("input", { id: "try-max-tokens", type: "number", value: 64, min: 1 });
  const log = h("div", { id: "try-chat" });
  const message = h("textarea", { id: "try-message", style: "min-height:60px", placeholder: "your message" });
  const bubble = (role, text) => h("div", { class: `msg ${role}` }, h("b", {}, role === "user" ? "you: " : "model: "), h("span", { class: "text" }, text));
  const send = h("button", { id: "try-send" }, "Send");
  send.addEventListener("click", async () => {
    if (!message.value.trim()) return;
    history.push({ role: "user", content: message.value });
    log.append(bubble("user", message.value));
    message.value = "";
    const reply = bubble("assistant", "");
    log.append(reply);
    const text = reply.querySelector(".text");
    send.disabled = true;
    const messages = [...(system.value.trim() ? [{ role: "system", content: system.value }] : []), ...history];
    try {
      const response = await fetch("/api/try/call?" + q({ path: document.getElementById("try-run").value, endpoint: s.endpoint }), {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ messages, stream: true, temperature: +temperature.value, top_p: +topP.value, max_tokens: +maxTokens.value }) });
      if (!response.ok) throw new Error((await response.json()).error || response.statusText);
      const reader = response.body.getReader(), decoder = new TextDecoder();
      let buffer = "", chunks = 0;
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        const events = buffer.split("\n\n");
        buffer = events.pop();
        for (const event of events) {
          const data = event.replace(/^data: /, "");
          if (data === "[DONE]") continue;
          const parsed = JSON.parse(data);
          if (parsed.error) throw new Error(parsed.error.message || parsed.error);
          const piece = (parsed.choices[0].delta || {}).content || "";
          if (piece) { text.textContent += piece; reply.dataset.chunks = String(++chunks); }
        }
      }
      history.push({ role: "assistant", content: text.textContent });
    } catch (err) { log.append(errorBox(err.message)); history.pop(); }
    send.disabled = false;
  });
  return h("div", { class: "card" }, h("label", {}, "system prompt"), system,
    h("div", { class: "row" }, h("div", {}, h("label", {}, "temperature"), temperature), h("div", {}, h("label", {}, "top_p"), topP), h("div", {}, h("label", {}, "max tokens"), maxTokens),
      h("button", { class: "plain", id: "try-clear", onclick: () => { history.length = 0; log.replaceChildren(); } }, "Clear history")),
    h("h2", {}, "Chat"), log, message, h("p", {}, send));
}

api("/api/workspace").then(ws => { document.getElementById("workspace").textContent = ws.root; }).catch(() => {});
route();
