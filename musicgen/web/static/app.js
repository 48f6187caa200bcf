// The musicgen page: fills the choices, posts the form as JSON, shows each tune.
// Everything that comes from a user or a model is put into the page with textContent, never as
// HTML; scores are parsed as SVG and stripped of anything that could run.
"use strict";

const FIELDS = ["model", "key", "meter", "tune_type", "title", "temperature", "top_p", "num",
  "random_seed", "max_length", "opening"];
const SVG_NS = "http://www.w3.org/2000/svg";
const UNSAFE_ELEMENTS = new Set(["script", "foreignobject", "iframe", "object", "embed", "audio",
  "video", "image", "animate", "set", "animatemotion", "animatetransform", "handler"]);

function element(tag, attributes = {}, text = null) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text !== null) node.textContent = text;
  return node;
}

function errorSlot(field) {
  return document.getElementById(`error-${field}`) || document.getElementById("error-form");
}

function clearErrors() {
  for (const slot of document.querySelectorAll(".error")) slot.textContent = "";
  for (const input of document.querySelectorAll("[aria-invalid]")) {
    input.removeAttribute("aria-invalid");
  }
}

function showError(field, message) {
  errorSlot(field).textContent = message;
  const input = document.getElementById(field);
  if (input) {
    input.setAttribute("aria-invalid", "true");
    input.focus();
  }
}

function setChoices(select, values) {
  const kept = select.value;
  select.replaceChildren(element("option", { value: "" }, "any"));
  for (const value of values) select.append(element("option", { value }, value));
  if (values.includes(kept)) select.value = kept;
}

async function loadOptions(form) {
  const model = document.getElementById("model").value;
  const url = `${form.dataset.optionsUrl}?model=${encodeURIComponent(model)}`;
  const response = await fetch(url);
  const answer = await response.json();
  if (!response.ok) {
    showError(answer.field || "model", answer.error || "cannot read this model's choices");
    return;
  }
  setChoices(document.getElementById("key"), answer.keys);
  setChoices(document.getElementById("meter"), answer.meters);
  setChoices(document.getElementById("tune_type"), answer.tune_types);
}

function formValues() {
  const values = {};
  for (const field of FIELDS) values[field] = document.getElementById(field).value;
  return values;
}

// Keeps the SVG's drawing, drops scripts, event handlers and links out of the document.
function sanitizeSvg(root) {
  const walker = [root];
  while (walker.length) {
    const node = walker.pop();
    for (const child of Array.from(node.children)) {
      if (UNSAFE_ELEMENTS.has(child.localName.toLowerCase())) {
        child.remove();
        continue;
      }
      for (const attribute of Array.from(child.attributes)) {
        const name = attribute.name.toLowerCase();
        const local = attribute.localName.toLowerCase();
        const linking = local === "href" || local === "src";
        if (name.startsWith("on") || (linking && !attribute.value.startsWith("#"))) {
          child.removeAttributeNode(attribute);
        }
      }
      walker.push(child);
    }
  }
  return root;
}

async function showScore(container, url, reason) {
  if (!url) {
    container.append(element("p", { class: "no-score" }, `No sheet music: ${reason}`));
    return;
  }
  const response = await fetch(url);
  const parsed = new DOMParser().parseFromString(await response.text(), "image/svg+xml");
  const svg = parsed.documentElement;
  if (!response.ok || svg.namespaceURI !== SVG_NS || svg.localName !== "svg") {
    container.append(element("p", { class: "no-score" }, "No sheet music: the score is unreadable"));
    return;
  }
  container.append(document.importNode(sanitizeSvg(svg), true));
}

function copyButton(text) {
  const button = element("button", { type: "button", class: "copy" }, "Copy ABC");
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(text);
      button.textContent = "Copied";
    } catch {
      button.textContent = "Select the text to copy";
    }
    setTimeout(() => { button.textContent = "Copy ABC"; }, 2000);
  });
  return button;
}

function validity(tune) {
  if (tune.valid) return element("p", { class: "validity valid" }, "Valid: passes every check");
  const first = tune.failed[0];
  const text = `Invalid: ${first.check} check failed (${first.reason})`;
  return element("p", { class: "validity invalid" }, text);
}

function nearest(tune) {
  const block = element("div", { class: "nearest" });
  const found = tune.nearest;
  if (!found) {
    block.append(element("p", {}, "Nearest training tune: the training tunes are not available"));
    return block;
  }
  const runs = `${found.chars} characters, ${found.bars} bars in a row`;
  const line = found.title === null
    ? `Nearest training tune: none shares a phrase (longest shared run: ${runs})`
    : `Nearest training tune: \u201c${found.title}\u201d (longest shared phrase: ${runs})`;
  block.append(element("p", {}, line));
  if (found.phrase) block.append(element("pre", { class: "phrase" }, found.phrase));
  return block;
}

function downloads(files) {
  const list = element("p", { class: "downloads" }, "Download: ");
  for (const kind of ["abc", "mid", "wav", "svg"]) {
    if (!files[kind]) continue;
    const name = files[kind].split("/").pop();
    list.append(element("a", { href: `${files[kind]}?download=1`, download: name }, `.${kind}`));
    list.append(" ");
  }
  return list;
}

async function showTune(results, tune) {
  const article = element("article", { class: "tune", "data-index": String(tune.index) });
  article.append(element("h2", {}, `${tune.index}. ${tune.title || "(untitled)"}`));
  const facts = `key ${tune.key || "?"} \u00b7 meter ${tune.meter || "?"} \u00b7 ` +
    `${tune.notes} notes \u00b7 ${tune.seconds} s \u00b7 ${tune.characters} characters`;
  article.append(element("p", { class: "facts" }, facts));
  article.append(validity(tune));
  const score = element("div", { class: "score" });
  article.append(score);
  if (tune.files.wav) {
    article.append(element("audio", { controls: "", preload: "metadata", src: tune.files.wav }));
  } else {
    article.append(element("p", { class: "no-audio" }, "No audio: the tune does not play"));
  }
  article.append(downloads(tune.files));
  const abc = element("details", { class: "abc", open: "" });
  abc.append(element("summary", {}, "ABC"), copyButton(tune.abc), element("pre", {}, tune.abc));
  article.append(abc, nearest(tune));
  results.append(article);
  await showScore(score, tune.files.svg, tune.score_reason);
}

async function generate(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const button = document.getElementById("generate");
  const status = document.getElementById("status");
  clearErrors();
  document.getElementById("results").dataset.done = "false";
  button.disabled = true;
  status.textContent = "Generating\u2026";
  try {
    const response = await fetch(form.dataset.generateUrl, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(formValues()),
    });
    const answer = await response.json();
    if (!response.ok) {
      const retry = response.headers.get("Retry-After");
      status.textContent = retry ? `Busy: try again in ${retry} s` : "";
      showError(answer.field || "form", answer.error || `the server answered ${response.status}`);
      return;
    }
    const results = document.getElementById("results");
    results.replaceChildren();
    results.dataset.batch = answer.batch;
    for (const tune of answer.tunes) await showTune(results, tune);
    const valid = answer.tunes.filter((tune) => tune.valid).length;
    status.textContent = `${answer.tunes.length} tunes (${valid} valid) in ` +
      `${answer.seconds.total.toFixed(1)} s`;
    results.dataset.done = "true";
  } catch (error) {
    status.textContent = "";
    showError("form", `no answer from the server (${error.message})`);
  } finally {
    button.disabled = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("controls");
  form.addEventListener("submit", generate);
  document.getElementById("model").addEventListener("change", () => loadOptions(form));
  loadOptions(form).catch((error) => showError("model", error.message));
});
