// The demo page: send the typed request to /parse and draw the answer.
// All text from the request and the model goes in through textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
let apiKey = "";
// Resolved times come back in the reader's own time zone.
const TIMEZONE = Intl.DateTimeFormat().resolvedOptions().timeZone;

async function call(path, body) {
  const headers = { "Content-Type": "application/json" };
  if (apiKey) headers.Authorization = `Bearer ${apiKey}`;
  const init = body === undefined
    ? { headers }
    : { method: "POST", headers, body: JSON.stringify(body) };
  const response = await fetch(path, init);
  const data = await response.json().catch(() => ({}));
  if (response.status === 401) {
    $("key-row").hidden = false;
    $("key").focus();
  }
  if (!response.ok) throw new Error(data.error || `The server answered ${response.status}.`);
  return data;
}

function percent(confidence) {
  return `${(confidence * 100).toFixed(1)}%`;
}

// One hue per slot name, so the same slot keeps its colour across requests.
function hue(name) {
  let h = 0;
  for (const c of name) h = (h * 31 + c.charCodeAt(0)) % 360;
  return h;
}

// A resolved slot value in a few words: a time, "from ... to ...", "90 minute = 5400 s", "20 $".
function valueText(resolved) {
  if (resolved.type === "interval") {
    return ["from", "to"]
      .filter((end) => resolved[end])
      .map((end) => `${end} ${valueText(resolved[end])}`)
      .join(" ");
  }
  let text = String(resolved.value);
  if (resolved.unit != null) text += ` ${resolved.unit}`;
  if (resolved.seconds != null) text += ` = ${resolved.seconds} s`;
  return text;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function highlight(text, slots) {
  const out = $("highlighted");
  out.replaceChildren();
  let at = 0;
  for (const slot of [...slots].sort((a, b) => a.start - b.start)) {
    out.append(text.slice(at, slot.start));
    const mark = el("mark", "slot");
    mark.dataset.slot = slot.slot;
    mark.style.setProperty("--hue", hue(slot.slot));
    mark.append(el("span", "value", text.slice(slot.start, slot.end)));
    mark.append(el("span", "label", slot.slot));
    out.append(mark);
    at = slot.end;
  }
  out.append(text.slice(at));
}

function intentText(result) {
  return result.in_scope ? result.intent.name : "out of scope";
}

// A text holding several requests: one line each, with its part of the text and its slots.
function showRequests(requests) {
  const list = $("requests");
  list.replaceChildren();
  for (const request of requests) {
    const item = el("li", "request");
    const intent = el("span", "request-intent", intentText(request));
    intent.classList.toggle("out-of-scope", !request.in_scope);
    item.append(intent, el("span", "muted", percent(request.intent_ranking[0].confidence)));
    item.append(el("span", "request-text", `“${request.text}”`));
    for (const slot of request.slots) {
      const name = el("span", "slot-name", slot.slot);
      name.style.setProperty("--hue", hue(slot.slot));
      item.append(name, el("span", "slot-value", slot.value));
    }
    list.append(item);
  }
  $("requests-section").hidden = requests.length < 2;
}

function show(result) {
  // Several requests: the top-level fields are the first one's; slots index the whole text.
  const requests = result.requests || [result];
  const allSlots = requests.flatMap((request) => request.slots);
  showRequests(requests);
  const intent = $("intent");
  intent.textContent = intentText(result);
  intent.classList.toggle("out-of-scope", !result.in_scope);
  // A rejected request names its nearest intent: its probability alone does not decide.
  const nearest = result.intent_ranking[0];
  $("confidence").textContent = result.in_scope
    ? percent(result.intent.confidence)
    : `nearest: ${nearest.name} ${percent(nearest.confidence)}`;
  highlight(result.text, allSlots);

  const slots = $("slots");
  slots.replaceChildren();
  if (allSlots.length === 0) slots.append(el("li", "muted", "none"));
  for (const slot of allSlots) {
    const item = el("li");
    const name = el("span", "slot-name", slot.slot);
    name.style.setProperty("--hue", hue(slot.slot));
    item.append(name, el("span", "slot-value", slot.value));
    if (slot.resolved) item.append(el("span", "slot-resolved", `= ${valueText(slot.resolved)}`));
    item.append(el("span", "muted", percent(slot.confidence)));
    slots.append(item);
  }

  const ranking = $("ranking");
  ranking.replaceChildren();
  for (const entry of result.intent_ranking) {
    const item = el("li");
    const bar = el("span", "bar");
    bar.style.setProperty("--width", percent(entry.confidence));
    item.append(el("span", "rank-name", entry.name), bar, el("span", "muted", percent(entry.confidence)));
    ranking.append(item);
  }
  $("result").hidden = false;
}

async function parse(event) {
  event.preventDefault();
  apiKey = $("key").value.trim();
  $("error").hidden = true;
  $("submit").disabled = true;
  try {
    show(await call("/parse", { text: $("text").value, timezone: TIMEZONE }));
  } catch (error) {
    $("error").textContent = error.message;
    $("error").hidden = false;
  } finally {
    $("submit").disabled = false;
  }
}

async function describeModel() {
  try {
    const meta = await call("/metadata");
    $("model").textContent = `${meta.backbone} · ${meta.intents.length} intents · ${meta.slots.length} slot types · v${meta.version}`;
    $("text").maxLength = meta.limits.max_chars;
    showExamples(meta.examples || []);
  } catch {
    // Without the key the page still works once the user types it in.
  }
}

// The bundle's own training requests (from /metadata), so the page speaks its domain.
function showExamples(examples) {
  $("examples").replaceChildren();
  if (examples.length) $("text").placeholder = examples[0];
  for (const example of examples) {
    const chip = el("button", "chip", example);
    chip.type = "button";
    chip.addEventListener("click", () => {
      $("text").value = example;
      $("ask").requestSubmit();
    });
    $("examples").append(chip);
  }
}

function init() {
  $("ask").addEventListener("submit", parse);
  describeModel();
}

init();
