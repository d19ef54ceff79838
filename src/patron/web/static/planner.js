// The planner walks the eight questions one step at a time; without this script the
// form is one long page and works the same. Preview renders the message for a customer.
(function () {
  "use strict";
  const form = document.getElementById("planner");
  if (!form) return;
  const steps = Array.from(form.querySelectorAll("fieldset.step"));
  const marks = Array.from(form.querySelectorAll("ol.steps li"));
  const back = document.getElementById("back");
  const next = document.getElementById("next");
  const save = document.getElementById("save");
  let at = 0;
  const wrong = form.parentElement.querySelector(".error");
  function show() {
    steps.forEach((s, i) => { s.hidden = !wrong && i !== at; });
    marks.forEach((m, i) => { if (i === at) m.setAttribute("aria-current", "step"); else m.removeAttribute("aria-current"); });
    back.hidden = wrong || at === 0;
    next.hidden = wrong || at === steps.length - 1;
    save.hidden = !wrong && at !== steps.length - 1;
  }
  back.onclick = () => { at = Math.max(0, at - 1); show(); steps[at].querySelector("input,select,textarea").focus(); };
  next.onclick = () => {
    const invalid = Array.from(steps[at].querySelectorAll("input,select,textarea")).find((f) => !f.checkValidity());
    if (invalid) { invalid.reportValidity(); return; }
    at = Math.min(steps.length - 1, at + 1); show(); steps[at].querySelector("input,select,textarea").focus();
  };
  show();
  document.getElementById("preview-button").onclick = async () => {
    const out = document.getElementById("preview");
    const answer = await fetch("/ui/campaigns/preview", {method: "POST", body: new FormData(form)});
    const data = await answer.json();
    out.replaceChildren();
    if (!answer.ok) { const p = document.createElement("p"); p.className = "error"; p.textContent = data.error; out.append(p); return; }
    const subject = document.createElement("p"); const label = document.createElement("strong");
    label.textContent = out.dataset.subject + ":"; subject.append(label, " ", data.subject);
    const text = document.createElement("pre"); text.textContent = data.text;
    out.append(subject, text);
  };
})();
