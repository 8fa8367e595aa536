// The config editor of the New run and New search pages: a form of config keys and its YAML,
// kept in step through the server's check, with each problem shown at the field of its key.
// Uses dom.js.
"use strict";

// A form field for one key of /api/form: a select for booleans and choices, else an input.
function fieldBox(f) {
  const choices = f.kind === "bool" ? [true, false] : f.choices;
  return h("div", { class: "field", "data-key": f.key },
    h("label", { for: `f-${f.key}` }, f.key),
    f.kind === "bool" || f.kind === "choice"
      ? h("select", { id: `f-${f.key}`, name: f.key }, choices.map(c => h("option", { value: String(c), selected: String(c) === String(f.default) }, String(c))))
      : h("input", { id: `f-${f.key}`, name: f.key, type: f.kind === "text" ? "text" : "number", step: f.kind === "int" ? "1" : "any",
                     placeholder: f.default === null ? "" : String(f.default) }),
    h("div", { class: "help" }, f.description), h("div", { class: "problem" }));
}

// The value a field gives the config: undefined when empty or at its default (the config leaves it out).
function fieldValue(f, container) {
  const input = container.querySelector(`[name="${f.key}"]`);
  const value = f.kind === "bool" ? input.value : input.value.trim();
  if (value === "" || value === String(f.default ?? "")) return undefined;
  if (f.kind === "int" || f.kind === "float") return Number(value);
  if (f.kind === "bool") return value === "true";
  if (/^[[{]/.test(value)) { try { return JSON.parse(value); } catch { /* left as text: the check names it */ } }
  return value;
}

// Show a config's value in its field (undefined: the default).
function showValue(f, container, value) {
  container.querySelector(`[name="${f.key}"]`).value = value === undefined || value === null
    ? (f.kind === "bool" || f.kind === "choice" ? String(f.default) : "")
    : typeof value === "object" ? JSON.stringify(value) : String(value);
}

// Keeps `fields` (an element holding .field[data-key] boxes) and `yamlBox` in step:
// - a form change is checked (`formBody()`: what the form says), the checked YAML is written to
//   the box unless the user is typing in it, then `afterForm(result)` runs;
// - typing in the box is checked 400 ms after the last key and `fillForm(result)` writes it into
//   the form (false: nothing to fill, the form's own check is run instead);
// - each problem shows at the field of the longest key that is its key or starts it, else at
//   `spots[key]`, else above the form; `launch` is disabled while there is any;
// - `launch` posts `start.body()` to `start.path` and goes to `start.then(answer)`.
function configEditor({ fields, yamlBox, messages, launch, checkPath, formBody, fillForm, afterForm = async () => {}, spots = {}, start }) {
  let typing = null, written = null;
  const showProblems = problems => {
    fields.querySelectorAll(".field").forEach(el => { el.classList.remove("invalid"); el.querySelector(".problem").textContent = ""; });
    Object.values(spots).forEach(el => { el.textContent = ""; });
    const loose = [];
    for (const p of problems) {
      const field = [...fields.querySelectorAll(".field[data-key]")]
        .filter(el => !el.dataset.key.endsWith(".") && (p.key === el.dataset.key || p.key.startsWith(el.dataset.key + ".")))
        .sort((a, b) => b.dataset.key.length - a.dataset.key.length)[0];
      if (field) { field.classList.add("invalid"); field.querySelector(".problem").textContent = p.message; (field.closest("details") || {}).open = true; }
      else if (spots[p.key]) spots[p.key].textContent = p.message;
      else loose.push(p.message);
    }
    messages.replaceChildren(...loose.map(errorBox));
    launch.disabled = problems.length > 0;
  };
  const check = latestOnly(async body => {
    try { return await api(checkPath, { method: "POST", body: JSON.stringify(body) }); }
    catch (err) { messages.replaceChildren(errorBox(err.message)); launch.disabled = true; return null; }
  });
  const fromForm = async () => {
    const result = await check(formBody());
    if (!result) return;
    if (document.activeElement !== yamlBox) yamlBox.value = written = result.yaml;
    await afterForm(result);
    showProblems(result.problems);
  };
  const fromYaml = async () => {
    const result = await check({ yaml: yamlBox.value });
    if (!result) return;
    if (await fillForm(result) === false) { await fromForm(); return; }
    showProblems(result.problems);
  };
  // a typed YAML is read back into the form, unless a form check has since written it (with the typing in it)
  yamlBox.addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(() => { if (yamlBox.value !== written) fromYaml(); }, 400); });
  launch.addEventListener("click", async () => {
    launch.disabled = true;
    try {
      start.then(await api(start.path, { method: "POST", body: JSON.stringify(start.body()) }));
    } catch (err) {
      if (err.body && err.body.problems) showProblems(err.body.problems); else messages.replaceChildren(errorBox(err.message));
      launch.disabled = false;
    }
  });
  // every field of `el` is checked when it changes
  const watch = el => el.querySelectorAll("input, select").forEach(input => input.addEventListener("change", fromForm));
  return { fromForm, fromYaml, watch };
}
