// The page at /: upload or drop an image (or pick a gallery sample); show the top-5 labels
// (POST /predict; all of them for a model of 5 classes or fewer) and the most similar gallery
// images (POST /similar). Plain JS, no CDN.
"use strict";

const TOP_K = 5;
const NEIGHBORS = 8;
const SAMPLES = 24;

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------- errors in plain words

function explain(status, detail) {
  const said = typeof detail === "string" ? detail : JSON.stringify(detail);
  switch (status) {
    case 400: return `That file is empty or unreadable (${said}).`;
    case 413: return `That image is too large for this service (${said}).`;
    case 415: return `That file is not an image this service can read (${said}).`;
    case 422: return `That image could not be read: it may be damaged or cut short (${said}).`;
    case 503: return `The service is busy or still starting; try again in a few seconds (${said}).`;
    default: return `The service answered ${status}: ${said}`;
  }
}

async function api(path, options) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (e) {
    throw new Error("The service cannot be reached. Is it still running?");
  }
  if (response.ok) return response;
  let detail = response.statusText;
  try {
    detail = (await response.json()).detail ?? detail;
  } catch (e) { /* not JSON: keep the status text */ }
  throw new Error(explain(response.status, detail));
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

const percent = (x) => `${(100 * x).toFixed(1)}%`;

// ---------------------------------------------------------------- classify + search

async function classify(blob, name) {
  showError("");
  const preview = $("preview");
  preview.src = URL.createObjectURL(blob);
  preview.alt = name;
  preview.hidden = false;
  $("predictions").replaceChildren(el("li", { className: "muted", textContent: "Classifying…" }));
  $("neighbors").replaceChildren();
  const form = () => {
    const data = new FormData();
    data.append("image", blob, name);
    return data;
  };
  try {
    const [predicted, similar] = await Promise.all([
      api(`/predict?top_k=${TOP_K}`, { method: "POST", body: form() }).then((r) => r.json()),
      api(`/similar?k=${NEIGHBORS}`, { method: "POST", body: form() }).then((r) => r.json()),
    ]);
    showPredictions(predicted.results[0].predictions);
    showNeighbors(similar.neighbors);
  } catch (e) {
    $("predictions").replaceChildren();
    showError(e.message);
  }
}

function showPredictions(predictions) {
  $("predictions").replaceChildren(...predictions.map((p) => {
    const fill = el("div");
    fill.style.width = percent(p.probability);
    return el("li", { className: "prediction" },
      el("div", { className: "bar-label" },
        el("span", { className: "label", textContent: p.label }),
        el("span", { className: "probability", textContent: percent(p.probability) })),
      el("div", { className: "bar" }, fill));
  }));
}

function showNeighbors(neighbors) {
  if (!neighbors.length) {
    $("neighbors").replaceChildren(el("p", { className: "muted", textContent:
      "The gallery is empty: add images with POST /gallery or `alexnet index`." }));
    return;
  }
  $("neighbors").replaceChildren(...neighbors.map((n) => el("div", { className: "thumb neighbor" },
    el("img", { src: `/gallery/${n.id}/image`, alt: n.label ?? n.id, loading: "lazy" }),
    el("div", { className: "label", textContent: n.label ?? "(no label)" }),
    el("div", { className: "distance muted", textContent: `distance ${n.distance.toFixed(2)}` }))));
}

// ---------------------------------------------------------------- inputs

function setUpInputs() {
  const drop = $("drop");
  $("file").addEventListener("change", (e) => {
    const file = e.target.files[0];
    if (file) classify(file, file.name);
  });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const file = e.dataTransfer.files[0];
    if (file) classify(file, file.name);
  });
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") $("file").click();
  });
}

async function loadSamples() {
  try {
    // up to 500 items, of which SAMPLES evenly spaced: the samples span the gallery's classes
    const page = await (await api("/gallery?limit=500")).json();
    const step = Math.max(1, page.items.length / SAMPLES);
    page.items = Array.from({ length: Math.min(SAMPLES, page.items.length) },
      (_, i) => page.items[Math.floor(i * step)]);
    if (!page.items.length) {
      $("samples").replaceChildren(el("p", { className: "muted", textContent:
        "The gallery is empty." }));
      return;
    }
    $("samples").replaceChildren(...page.items.map((item) => {
      const button = el("button", { className: "thumb sample", type: "button",
        title: item.label ?? item.id },
        el("img", { src: item.image_url, alt: item.label ?? item.id, loading: "lazy" }),
        el("div", { textContent: item.label ?? "(no label)" }));
      button.addEventListener("click", async () => {
        try {
          const blob = await (await api(item.image_url)).blob();
          classify(blob, `${item.label ?? "sample"} (${item.id.slice(0, 8)})`);
        } catch (e) {
          showError(e.message);
        }
      });
      return button;
    }));
  } catch (e) {
    $("samples").replaceChildren(el("p", { className: "muted", textContent: e.message }));
  }
}

// ---------------------------------------------------------------- the model in use

async function loadModel() {
  let info;
  try {
    info = await (await api("/models")).json();
  } catch (e) {
    $("model-knows").textContent = e.message;
    setTimeout(loadModel, 3000);
    return;
  }
  const m = info.loaded;
  if (!m) {
    $("model-knows").textContent = "The model is still loading…";
    setTimeout(loadModel, 2000);
    return;
  }
  $("model-knows").textContent = `This model knows ${m.knows}.`;
  $("model-hint").textContent = m.hint ? `It is ${m.hint}.` : "";
  $("model-hint").hidden = !m.hint;
  $("model-line").textContent = `Model ${m.id} (${m.arch}), ${m.precision} on ${m.provider}`;
  // /predict gives at most as many labels as the model has classes: say which it shows
  $("predictions-heading").textContent =
    `Top ${Math.min(TOP_K, m.num_classes)} of ${m.num_classes} classes`;
  const rows = [["model", m.id], ["architecture", m.arch], ["classes", m.labels.join(", ")],
    ["precision", m.precision], ["onnxruntime provider", m.provider]];
  for (const [key, title] of [["single_crop", "one centre crop"], ["ten_crop", "ten crops"]]) {
    const f = m.metrics[key];
    // no top-5 error with 5 classes or fewer (every class is in the top five): top-1 only
    if (f) rows.push([`val error, ${title}`, `top-1 ${percent(f.top1_err)}` +
      (f.top5_err == null ? "" : `, top-5 ${percent(f.top5_err)}`)]);
  }
  if (m.metrics.source) rows.push(["figures from", m.metrics.source]);
  $("figures").replaceChildren(...rows.map(([k, v]) =>
    el("tr", {}, el("th", { textContent: k }), el("td", { textContent: String(v) }))));
  const captions = { filters: "conv1 kernels (the paper's Figure 3)",
    curves: "training curves: loss, top-1 / top-5 error, learning rate" };
  $("pictures").replaceChildren(...Object.entries(m.pictures ?? {}).map(([name, url]) =>
    el("figure", {}, el("img", { src: url, alt: captions[name] ?? name, className: name }),
      el("figcaption", { className: "muted small", textContent: captions[name] ?? name }))));
  loadSamples(); // the gallery is ready once the model is
}

setUpInputs();
loadModel();
