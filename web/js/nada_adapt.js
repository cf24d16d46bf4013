// Live loss curve and selected layers on the NADA Adapt node.
//
// The Python node sends two events through the bridge (nodes/comfy_bridge.py, send_event):
//   "nada.adapt.start"    {node, total, layers: [all trainable layer names]}
//   "nada.adapt.progress" {node, step, total, loss, its, selected: [layer names trained this step]}
// and, when it finishes, its UI result carries the whole curve ("nada_loss") so a cached run or a
// reloaded page still shows it. Nothing here changes how the graph runs.
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";

const NODE_CLASS = "NADA_Adapt";
const WIDGET_NAME = "nada_loss_curve";
const HEIGHT = 150;
const REDRAW_MS = 100; // a fast run sends many steps a second; the curve is redrawn at most this often

// execution id (string: "7", or "12:7" for node 7 inside the subgraph node 12) ->
// {total, steps: [], losses: [], layers: [], selected: Set, its}
const runs = new Map();

function newRun(total, layers) {
  return { total: total || 0, steps: [], losses: [], layers: layers || [], selected: new Set(), its: 0 };
}

function runFor(id) {
  const key = String(id);
  if (!runs.has(key)) runs.set(key, newRun(0, []));
  return runs.get(key);
}

function nodeByExecutionId(id) {
  // The server names a node inside a subgraph by the path of ids from the root graph ("12:7"). Look the
  // node up when the event arrives: a node's id is only final after the workflow is loaded (nodeCreated
  // runs before configure assigns the saved id).
  let graph = app.rootGraph || app.graph;
  const path = String(id).split(":");
  for (const [i, part] of path.entries()) {
    const node = graph && (graph.getNodeById(Number(part)) || graph.getNodeById(part));
    if (!node || i === path.length - 1) return node || null;
    graph = node.subgraph; // undefined for a node that is not a subgraph: the lookup ends there
  }
  return null;
}

const pending = new Set();
let timer = 0;

function repaint(id) {
  pending.add(String(id));
  if (!timer) timer = setTimeout(flush, REDRAW_MS);
}

function flush() {
  timer = 0;
  for (const id of pending) {
    const node = nodeByExecutionId(id);
    if (node && node.nadaPaintLossCurve) node.nadaPaintLossCurve(id);
  }
  pending.clear();
}

function envelope(run, x, plotW) {
  // At most one [px, min, max] per pixel column: a long run costs no more to draw, and spikes stay visible.
  const cols = [];
  run.losses.forEach((v, i) => {
    const px = Math.round(x(run.steps[i]));
    const last = cols[cols.length - 1];
    if (last && last[0] === px) {
      last[1] = Math.min(last[1], v);
      last[2] = Math.max(last[2], v);
    } else if (cols.length <= plotW + 1) {
      cols.push([px, v, v]);
    }
  });
  return cols;
}

function draw(canvas, run) {
  const ratio = window.devicePixelRatio || 1;
  const width = Math.max(50, canvas.clientWidth || 300);
  const height = Math.max(50, canvas.clientHeight || HEIGHT);
  if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.fillStyle = "#1b1b1b";
  ctx.fillRect(0, 0, width, height);

  const stripHeight = run.layers.length ? 14 : 0;
  const pad = { left: 42, right: 8, top: 8, bottom: 18 + stripHeight };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  ctx.font = "10px sans-serif";

  if (!run.losses.length) {
    ctx.fillStyle = "#888";
    ctx.fillText("loss curve: waiting for the first step", pad.left, pad.top + plotH / 2);
  } else {
    let lo = Infinity;
    let hi = -Infinity;
    for (const v of run.losses) {
      lo = Math.min(lo, v);
      hi = Math.max(hi, v);
    }
    if (hi - lo < 1e-9) {
      hi += 0.5;
      lo -= 0.5;
    }
    const total = Math.max(run.total, run.steps[run.steps.length - 1] || 1);
    const x = (s) => pad.left + (plotW * s) / total;
    const y = (v) => pad.top + plotH * (1 - (v - lo) / (hi - lo));

    ctx.strokeStyle = "#444";
    ctx.strokeRect(pad.left, pad.top, plotW, plotH);
    ctx.fillStyle = "#aaa";
    ctx.fillText(hi.toPrecision(3), 2, pad.top + 8);
    ctx.fillText(lo.toPrecision(3), 2, pad.top + plotH);

    ctx.strokeStyle = "#6cf";
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    envelope(run, x, plotW).forEach(([px, min, max], i) => {
      if (i === 0) ctx.moveTo(px, y(max));
      else ctx.lineTo(px, y(max));
      if (min !== max) ctx.lineTo(px, y(min));
    });
    ctx.stroke();

    const last = run.losses[run.losses.length - 1];
    const step = run.steps[run.steps.length - 1];
    const speed = run.its ? ` · ${run.its.toFixed(2)} it/s` : "";
    ctx.fillStyle = "#ddd";
    ctx.fillText(`step ${step}/${run.total} · loss ${last.toFixed(4)}${speed}`, pad.left, height - stripHeight - 5);
  }

  if (run.layers.length) {
    // One cell per trainable layer, lit when it is trained (in auto mode: picked for this step).
    const cellW = plotW / run.layers.length;
    const top = height - stripHeight;
    run.layers.forEach((name, i) => {
      ctx.fillStyle = run.selected.has(name) ? "#fc6" : "#333";
      ctx.fillRect(pad.left + i * cellW + 0.5, top + 2, Math.max(1, cellW - 1), stripHeight - 4);
    });
    ctx.fillStyle = "#aaa";
    ctx.fillText("layers", 2, height - 4);
  }
}

api.addEventListener("nada.adapt.start", (event) => {
  const { node, total, layers } = event.detail || {};
  if (node === undefined || node === null) return;
  runs.set(String(node), newRun(total, layers));
  repaint(node);
});

api.addEventListener("nada.adapt.progress", (event) => {
  const d = event.detail || {};
  if (d.node === undefined || d.node === null || typeof d.loss !== "number") return;
  const run = runFor(d.node);
  if (d.total) run.total = d.total;
  run.steps.push(d.step);
  run.losses.push(d.loss);
  run.its = d.its || 0;
  if (Array.isArray(d.selected)) run.selected = new Set(d.selected);
  repaint(d.node);
});

api.addEventListener("executed", (event) => {
  const d = event.detail || {};
  const out = d.output || {};
  if (!Array.isArray(out.nada_loss)) return;
  const previous = runFor(d.node);
  const run = newRun(out.nada_loss.length, previous.layers);
  run.its = previous.its;
  run.selected = previous.selected;
  out.nada_loss.forEach((v, i) => {
    run.steps.push(i + 1);
    run.losses.push(v);
  });
  if (Array.isArray(out.nada_layers)) run.selected = new Set(out.nada_layers);
  runs.set(String(d.node), run);
  repaint(d.node);
});

app.registerExtension({
  name: "comfyui-nada.adapt-loss-curve",
  nodeCreated(node) {
    if (node.comfyClass !== NODE_CLASS) return;
    const canvas = document.createElement("canvas");
    canvas.style.width = "100%";
    canvas.style.height = `${HEIGHT}px`;
    const widget = node.addDOMWidget(WIDGET_NAME, "nada_loss_curve", canvas, {
      serialize: false,
      hideOnZoom: true,
      getMinHeight: () => HEIGHT,
      getMaxHeight: () => HEIGHT,
    });
    // The curve is a view of server events, not a parameter: keep it out of the saved workflow.
    widget.serialize = false;
    // Painted for the run of the execution id the last event named (inside a subgraph it is not node.id).
    node.nadaPaintLossCurve = (id) => {
      if (id !== undefined) node.nadaRunId = id;
      draw(canvas, runFor(node.nadaRunId ?? node.id));
    };
    requestAnimationFrame(() => node.nadaPaintLossCurve());
  },
});
