// OpenS1 chat page. Streams /v1/chat/completions (SSE) with fetch + ReadableStream;
// reasoning goes into a collapsible <details>, molecules are drawn by the server
// (/v1/opens1/molecule, RDKit SVG). Untrusted text is only ever set with
// textContent, never innerHTML, so model output cannot inject markup.
"use strict";

const $ = (id) => document.getElementById(id);
const history = [];          // OpenAI-format messages sent so far
let attachments = [];        // {kind: "image", url} | {kind: "smiles", smiles}
let modelName = null;
let controller = null;       // AbortController of the running request

$("api-key").value = localStorage.getItem("opens1-api-key") || "";
$("api-key").addEventListener("change", () => { localStorage.setItem("opens1-api-key", $("api-key").value); loadModel(); });

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function scrollDown() { $("log").scrollTop = $("log").scrollHeight; }

async function loadModel() {
  try {
    const r = await fetch("/v1/models", { headers: headers() });
    const body = await r.json();
    if (!r.ok) throw new Error(body.error ? body.error.message : r.statusText);
    modelName = body.data[0].id;
    $("model").textContent = "model: " + modelName + " · context " + body.data[0].max_model_len;
  } catch (e) {
    $("model").textContent = "cannot list models: " + e.message;
  }
}

// ---------------------------------------------------------------- molecules

async function moleculeCard(smiles) {
  const card = el("div", "molecule");
  const img = el("img");
  img.alt = smiles;
  card.append(img, el("div", null, smiles));
  try {
    const r = await fetch("/v1/opens1/molecule?smiles=" + encodeURIComponent(smiles), { headers: headers() });
    if (!r.ok) throw new Error((await r.json()).error.message);
    img.src = URL.createObjectURL(await r.blob());   // the SVG comes back as an image, not as markup
  } catch (e) {
    card.replaceChildren(el("div", null, "invalid SMILES: " + smiles));
  }
  return card;
}

async function renderMolecules(container, text) {
  const found = [...text.matchAll(/<SMILES>\s*([^<\s]+)\s*<\/SMILES>/g)].map((m) => m[1]);
  if (!found.length) return;
  const box = el("div", "molecules");
  container.append(box);
  for (const s of [...new Set(found)].slice(0, 8)) box.append(await moleculeCard(s));
}

// ---------------------------------------------------------------- composer

function renderAttachments() {
  const box = $("attachments");
  box.replaceChildren();
  attachments.forEach((a, i) => {
    const chip = el("div", "chip");
    if (a.kind === "image") { const img = el("img"); img.src = a.url; chip.append(img); }
    else chip.append(el("span", null, "SMILES " + a.smiles));
    const x = el("button", null, "×");
    x.type = "button";
    x.title = "remove";
    x.onclick = () => { attachments.splice(i, 1); renderAttachments(); };
    chip.append(x);
    box.append(chip);
  });
}

$("image").addEventListener("change", (ev) => {
  const file = ev.target.files[0];
  if (!file) return;
  const reader = new FileReader();
  reader.onload = () => { attachments.push({ kind: "image", url: reader.result }); renderAttachments(); };
  reader.readAsDataURL(file);   // sent inline: the server never fetches remote URLs
  ev.target.value = "";
});

$("add-smiles").addEventListener("click", () => {
  const s = $("smiles").value.trim();
  if (!s) return;
  attachments.push({ kind: "smiles", smiles: s });
  $("smiles").value = "";
  renderAttachments();
});

$("prompt").addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); $("composer").requestSubmit(); }
});

$("clear").addEventListener("click", () => { history.length = 0; $("log").replaceChildren(); });
$("stop").addEventListener("click", () => { if (controller) controller.abort(); });

function userContent(text) {
  // SMILES travel in Intern-S1's domain tags, so the tokenizer treats them as chemistry
  const smiles = attachments.filter((a) => a.kind === "smiles").map((a) => "<SMILES>" + a.smiles + "</SMILES>");
  const full = [text, ...smiles].filter(Boolean).join("\n");
  const images = attachments.filter((a) => a.kind === "image");
  if (!images.length) return full;
  return [...images.map((a) => ({ type: "image_url", image_url: { url: a.url } })), { type: "text", text: full }];
}

function showUser(content) {
  const div = el("div", "msg user");
  const text = typeof content === "string" ? content : content.filter((p) => p.type === "text").map((p) => p.text).join("");
  div.append(el("div", null, text));
  if (typeof content !== "string") {
    for (const p of content) if (p.type === "image_url") { const img = el("img", "thumb"); img.src = p.image_url.url; div.append(img); }
  }
  $("log").append(div);
  renderMolecules(div, text);
  scrollDown();
}

// ---------------------------------------------------------------- streaming

async function* sseEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      for (const line of block.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return;
        yield JSON.parse(data);
      }
    }
  }
}

$("composer").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const text = $("prompt").value.trim();
  if ((!text && !attachments.length) || controller) return;
  const content = userContent(text);
  history.push({ role: "user", content });
  showUser(content);
  $("prompt").value = "";
  attachments = [];
  renderAttachments();

  const div = el("div", "msg assistant");
  const details = el("details", "reasoning");
  details.open = true;
  const summary = el("summary", null, "Reasoning");
  const reasoning = el("div");
  details.append(summary, reasoning);
  const answer = el("div");
  div.append(details, answer);
  details.hidden = true;
  $("log").append(div);

  controller = new AbortController();
  $("send").disabled = true;
  $("stop").disabled = false;
  $("status").textContent = "generating…";
  const t0 = performance.now();
  let ntok = 0;
  let finish = null;
  try {
    const r = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers(), signal: controller.signal,
      body: JSON.stringify({
        model: modelName, messages: history, stream: true,
        temperature: parseFloat($("temperature").value), max_tokens: parseInt($("max-tokens").value, 10),
        chat_template_kwargs: { enable_thinking: $("thinking").checked },
        stream_options: { include_usage: true },
      }),
    });
    if (!r.ok) throw new Error((await r.json()).error.message);
    for await (const chunk of sseEvents(r)) {
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.usage) ntok = chunk.usage.completion_tokens;
      for (const c of chunk.choices || []) {
        const d = c.delta || {};
        if (d.reasoning_content) { details.hidden = false; reasoning.textContent += d.reasoning_content; }
        if (d.content) answer.textContent += d.content;
        for (const tc of d.tool_calls || []) div.append(el("div", "tool-call", "tool call: " + tc.function.name + " " + tc.function.arguments));
        if (c.finish_reason) finish = c.finish_reason;
      }
      scrollDown();
    }
    history.push({ role: "assistant", content: answer.textContent });
    const secs = (performance.now() - t0) / 1000;
    $("status").textContent = `${ntok} tokens in ${secs.toFixed(1)} s (${finish || "done"})`;
  } catch (e) {
    if (e.name === "AbortError") { $("status").textContent = "stopped"; history.push({ role: "assistant", content: answer.textContent }); }
    else { div.classList.add("error"); answer.textContent += (answer.textContent ? "\n" : "") + "error: " + e.message; $("status").textContent = ""; history.pop(); }
  } finally {
    details.open = false;   // reasoning collapses once the answer is complete
    summary.textContent = "Reasoning (" + reasoning.textContent.length + " chars)";
    controller = null;
    $("send").disabled = false;
    $("stop").disabled = true;
    renderMolecules(div, answer.textContent);
  }
});

// `/?q=...&smiles=...&thinking=0` pre-fills and sends a message: shareable demo links,
// and what the headless-browser test drives.
(async () => {
  await loadModel();
  const params = new URLSearchParams(location.search);
  if (params.get("thinking") === "0") $("thinking").checked = false;
  if (params.get("max_tokens")) $("max-tokens").value = params.get("max_tokens");
  if (params.get("smiles")) { attachments.push({ kind: "smiles", smiles: params.get("smiles") }); renderAttachments(); }
  if (params.get("q")) { $("prompt").value = params.get("q"); $("composer").requestSubmit(); }
})();
