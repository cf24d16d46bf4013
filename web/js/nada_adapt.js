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

// node id (string) -> {total, steps: [], losses: [], layers: [], selected: Set, its}
const runs = new Map();

function newRun(total, layers) {
  return { total: total || 0, steps: [], losses: [], layers: layers || [], selected: new Set(), its: 0 };
}

function runFor(id) {
  const key = String(id);
  if (!runs.has(key)) runs.set(key, newRun(0, []));
  return runs.get(key);
}

function repaint(id) {
  // Look the node up when the event arrives: a node's id is only final after the workflow is loaded
  // (nodeCreated runs before configure assigns the saved id).
  const graph = app.graph;
  const node = graph && (graph.getNodeById(Number(id)) || graph.getNodeById(id));
  if (node && node.nadaPaintLossCurve) node.nadaPaintLossCurve();
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
    let lo = Math.min(...run.losses);
    let hi = Math.max(...run.losses);
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
    run.losses.forEach((v, i) => {
      const px = x(run.steps[i]);
      const py = y(v);
      if (i === 0) ctx.moveTo(px, py);
      else ctx.lineTo(px, py);
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
    node.nadaPaintLossCurve = () => draw(canvas, runFor(node.id));
    requestAnimationFrame(() => node.nadaPaintLossCurve());
  },
});
