// The segment builder: conditions picked from fields grouped by kind, nested in AND/OR
// groups; the rule is kept as JSON in the form and counted live on the server.
(function () {
  "use strict";
  const root = document.getElementById("builder");
  if (!root) return;
  const fields = JSON.parse(root.dataset.fields);
  // the page passes the labels in its language; a label it lacks shows in English
  const texts = document.getElementById("builder-texts");
  const T = texts ? JSON.parse(texts.textContent) : {};
  const tr = (english) => T[english] || english;
  const ruleBox = document.getElementById("rule");
  const form = document.getElementById("segment-form");
  const OPS = [["eq", "="], ["ne", "≠"], ["gt", ">"], ["ge", "≥"], ["lt", "<"], ["le", "≤"], ["contains", tr("contains")]];
  const CHANNELS = ["email", "sms", "phone", "telegram", "whatsapp", "push"];
  let serial = 0;

  function labelled(text, control) {
    const id = "b" + (++serial);
    control.id = id;
    const label = document.createElement("label");
    label.htmlFor = id;
    label.textContent = text;
    const span = document.createElement("span");
    span.className = "field";
    span.append(label, control);
    return span;
  }
  function select(options, value) {
    const el = document.createElement("select");
    for (const [v, t] of options) {
      const o = document.createElement("option");
      o.value = v; o.textContent = t; if (v === value) o.selected = true; el.append(o);
    }
    return el;
  }
  function input(value, type) {
    const el = document.createElement("input");
    el.type = type || "text"; el.value = value === undefined ? "" : value; el.size = 12;
    return el;
  }
  function button(text, onclick) {
    const b = document.createElement("button");
    b.type = "button"; b.textContent = text; b.className = "secondary"; b.onclick = onclick;
    return b;
  }
  function typed(text) {
    if (text === "") return text;
    const n = Number(text);
    return Number.isNaN(n) ? text : n;
  }

  // one condition: returns {el, read()}
  function condition(kind, data) {
    const row = document.createElement("div");
    row.className = "condition";
    let read;
    if (kind === "profile" || kind === "score" || kind === "orders") {
      const names = fields[kind].map((f) => [f, f.replaceAll("_", " ")]);
      const field = select(names, data.field || data.measure);
      const op = select(OPS, data.op || "eq");
      const value = input(data.value);
      const parts = [labelled(tr(kind === "orders" ? "Orders: measure" : kind === "score" ? "Score" : "Profile field"), field),
        labelled(tr("is"), op), labelled(tr("value"), value)];
      let days = null;
      if (kind === "orders") { days = input(data.days, "number"); parts.push(labelled(tr("in the last days"), days)); }
      row.append(...parts);
      read = () => {
        const out = {kind: kind, op: op.value, value: typed(value.value)};
        out[kind === "orders" ? "measure" : "field"] = field.value;
        if (kind === "profile" && typeof out.value === "number" && field.value !== "birth_date") out.value = String(out.value);
        if (days && days.value) out.days = Number(days.value);
        return out;
      };
    } else if (kind === "consent") {
      const channel = select(CHANNELS.map((c) => [c, c]), data.channel || "email");
      const status = select([["granted", tr("granted")], ["withdrawn", tr("withdrawn")], ["none", tr("never asked")]], data.status || "granted");
      row.append(labelled(tr("Consent on"), channel), labelled(tr("status"), status));
      read = () => ({kind: "consent", channel: channel.value, status: status.value});
    } else if (kind === "event") {
      const type = input(data.type || "");
      const days = input(data.days, "number");
      row.append(labelled(tr("Had an event of type"), type), labelled(tr("in the last days"), days));
      read = () => { const o = {kind: "event", type: type.value}; if (days.value) o.days = Number(days.value); return o; };
    } else if (kind === "category") {
      const cats = input((data.categories || []).join(", "));
      const days = input(data.days, "number");
      row.append(labelled(tr("Bought in categories"), cats), labelled(tr("in the last days"), days));
      read = () => { const o = {kind: "category", categories: cats.value.split(",").map((c) => c.trim()).filter(Boolean)}; if (days.value) o.days = Number(days.value); return o; };
    }
    return {el: row, read: read};
  }

  // a group of conditions joined by AND (all) or OR (any)
  function group(data, removable) {
    const box = document.createElement("fieldset");
    box.className = "group";
    const legend = document.createElement("legend");
    const join = select([["all", tr("All of these (AND)")], ["any", tr("Any of these (OR)")]], data.kind || "all");
    legend.append(labelled(tr("Match"), join));
    box.append(legend);
    const list = document.createElement("div");
    box.append(list);
    const children = [];
    function add(child) {
      const holder = document.createElement("div");
      holder.className = "child";
      holder.append(child.el, button(tr("Remove"), () => { holder.remove(); children.splice(children.indexOf(child), 1); changed(); }));
      list.append(holder);
      children.push(child);
    }
    const picker = document.createElement("select");
    const groups = {"Profile": [["profile", "Profile field"]], "Purchases": [["orders", "Orders measure"], ["category", "Bought in categories"]],
      "Analytics": [["score", "Score"]], "Contact": [["consent", "Consent"]], "Behaviour": [["event", "Event"]], "Logic": [["group", "Nested group (AND/OR)"]]};
    const blank = document.createElement("option"); blank.value = ""; blank.textContent = tr("Add a condition…"); picker.append(blank);
    for (const [name, items] of Object.entries(groups)) {
      const og = document.createElement("optgroup"); og.label = tr(name);
      for (const [v, t] of items) { const o = document.createElement("option"); o.value = v; o.textContent = tr(t); og.append(o); }
      picker.append(og);
    }
    picker.onchange = () => {
      if (!picker.value) return;
      add(picker.value === "group" ? group({kind: "any", conditions: []}, true) : condition(picker.value, {}));
      picker.value = ""; changed();
    };
    box.append(labelled(tr("Condition"), picker));
    for (const c of data.conditions || []) {
      add(c.kind === "all" || c.kind === "any" ? group(c, true) : condition(c.kind, c));
    }
    join.onchange = changed;
    return {el: box, read: () => ({kind: join.value, conditions: children.map((c) => c.read())})};
  }

  let start = {kind: "all", conditions: []};
  try { if (ruleBox.value.trim()) start = JSON.parse(ruleBox.value); } catch (e) { /* the server names the error */ }
  if (start.kind !== "all" && start.kind !== "any") start = {kind: "all", conditions: [start]};
  const top = group(start, false);
  root.append(top.el);
  root.addEventListener("input", changed);
  root.addEventListener("change", changed);

  let timer = null;
  function changed() {
    const rule = top.read();
    ruleBox.value = JSON.stringify(rule);
    clearTimeout(timer);
    timer = setTimeout(() => count(rule), 250);
  }
  async function count(rule) {
    const out = document.getElementById("count");
    const note = document.getElementById("count-note");
    if (!rule.conditions.length) { out.textContent = "—"; note.textContent = tr("add a condition"); return; }
    const body = new FormData();
    body.append("rule", JSON.stringify(rule));
    body.append("csrf", form.querySelector("[name=csrf]").value);
    const answer = await fetch("/ui/segments/count", {method: "POST", body: body});
    const data = await answer.json();
    if (answer.ok) { out.textContent = data.customers.toLocaleString(); note.textContent = ""; }
    else { out.textContent = "—"; note.textContent = data.error; }
  }
  changed();
})();
