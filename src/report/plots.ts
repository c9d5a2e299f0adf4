// The report's plots as Vega-Lite specs, one dataset (a sweep, or loose runs on the same data) at a
// time. Metric-against-L0 plots put L0 on a log axis, join each series' points (a sweep group:
// one variant, its knob swept) in order of L0, and mark the Pareto frontier across all series.
// Every point carries its run and exact values as its description (the SVG's aria-label), so a
// test can read each plotted point back and compare it with the run's eval.json.
import type { TopLevelSpec } from "vega-lite";
import type { ReportRun } from "./collect.ts";

export interface Plot {
  /** file name stem, e.g. "fvu-l0" */
  id: string;
  title: string;
  /** one sentence under the figure: what to read from it */
  caption: string;
  spec: TopLevelSpec;
}

/** a run's point in a metric-against-L0 plot */
export interface Point { run: string; series: string; knob: string; l0: number; value: number; frontier: boolean; label: string }

const WIDTH = 520, HEIGHT = 320;
/** the font every plot names; the PNG renderer is given this font's file (src/report/render.ts) */
export const FONT = "DejaVu Sans";
const CONFIG = { font: FONT, view: { stroke: "#ccc" }, axis: { labelFontSize: 11, titleFontSize: 12 }, legend: { labelFontSize: 11, titleFontSize: 12, labelLimit: 280 }, title: { fontSize: 14, anchor: "start" as const } };

/** y metrics against L0 that the report draws, with whether lower is better (for the frontier) */
interface Metric { id: string; title: string; axis: string; lowerIsBetter: boolean | null; log?: boolean; domain?: [number, number]; get(r: ReportRun): number | undefined; caption: string }

export const L0_METRICS: Metric[] = [
  { id: "fvu-l0", title: "FVU against L0", axis: "FVU (fraction of variance unexplained)", lowerIsBetter: true, log: true, get: (r) => r.eval?.fvu, caption: "Lower and further left is better; the dashed black line is the Pareto frontier over all runs, ringed points lie on it." },
  { id: "mse-l0", title: "MSE against L0", axis: "MSE (Σ_d (x − x̂)² per token)", lowerIsBetter: true, log: true, get: (r) => r.eval?.mse, caption: "The same comparison in raw squared error; the frontier is marked as in the FVU plot." },
  { id: "ce-recovered-l0", title: "CE loss recovered against L0", axis: "CE loss recovered (1 = clean model)", lowerIsBetter: false, get: (r) => r.eval?.downstream?.ce_loss_recovered, caption: "The language model's next-token loss with the SAE spliced in, relative to zero ablation (0) and the clean model (1); higher is better." },
  { id: "kl-l0", title: "KL divergence against L0", axis: "KL(clean ‖ with SAE) per token (nats)", lowerIsBetter: true, log: true, get: (r) => r.eval?.downstream?.kl_sae, caption: "How far the spliced model's next-token distribution moves from the clean one; lower is better." },
  { id: "gamma-l0", title: "Shrinkage (γ) against L0", axis: "γ = E‖x̂‖² / E[x·x̂]", lowerIsBetter: null, get: (r) => r.eval?.gamma, caption: "γ < 1 means the reconstructions are shrunk towards zero (the L1 penalty's bias); 1 is unbiased." },
  { id: "l2-ratio-l0", title: "L2 ratio against L0", axis: "mean ‖x̂‖ / ‖x‖", lowerIsBetter: null, get: (r) => r.eval?.l2_ratio, caption: "The reconstruction's norm relative to the input's; below 1, the SAE under-reconstructs." },
  { id: "recovered-l0", title: "Ground-truth features recovered against L0", axis: "true features matched at cosine > 0.9", lowerIsBetter: false, domain: [0, 1], get: (r) => r.eval?.ground_truth?.recovered_0_9, caption: "Synthetic data: the fraction of the known features that some decoder row matches with cosine above 0.9; higher is better." },
  { id: "mmcs-l0", title: "Mean max cosine similarity against L0", axis: "MMCS recall (mean best cosine per true feature)", lowerIsBetter: false, get: (r) => r.eval?.ground_truth?.mmcs_recall, caption: "Synthetic data: for each known feature, the best cosine with a decoder row, averaged; higher is better." },
];

/** The runs' points for one metric (runs without the metric, or with L0 = 0, which a log axis cannot show, are left out). */
export function metricPoints(runs: ReportRun[], m: Metric): Point[] {
  const pts: Point[] = [];
  for (const r of runs) {
    const v = m.get(r);
    if (!r.eval || v === undefined || !Number.isFinite(v) || !(r.eval.l0 > 0)) continue;
    if (m.log && !(v > 0)) continue;
    pts.push({ run: r.id, series: r.series, knob: r.knob, l0: r.eval.l0, value: v, frontier: false, label: "" });
  }
  if (m.lowerIsBetter !== null) markFrontier(pts, m.lowerIsBetter);
  for (const p of pts) p.label = `${p.run}: l0=${p.l0}, ${m.id.replace(/-l0$/, "")}=${p.value}`;
  return pts;
}

/** Pareto frontier: no other run has both a lower (or equal) L0 and a better value. */
export function markFrontier(pts: Point[], lowerIsBetter: boolean): void {
  const better = (a: number, b: number) => (lowerIsBetter ? a < b : a > b);
  const sorted = [...pts].sort((a, b) => a.l0 - b.l0 || (better(a.value, b.value) ? -1 : better(b.value, a.value) ? 1 : 0));
  let best: number | null = null;
  for (const p of sorted) {
    if (best === null || better(p.value, best)) {
      p.frontier = true;
      best = p.value;
    }
  }
}

/** The metric-against-L0 plots that have data. */
export function l0Plots(runs: ReportRun[], series: string[]): Plot[] {
  const plots: Plot[] = [];
  for (const m of L0_METRICS) {
    const pts = metricPoints(runs, m);
    if (pts.length === 0) continue;
    const x = { field: "l0", type: "quantitative" as const, title: "L0 (active latents per token, log scale)", scale: { type: "log" as const, nice: false, padding: 12 } };
    // ticks to 3 significant digits: a log axis over a narrow range would otherwise print every digit
    const y = { field: "value", type: "quantitative" as const, title: m.axis, axis: { format: ".3~g" }, scale: m.log ? { type: "log" as const, nice: false, padding: 12 } : m.domain ? { domain: m.domain } : { zero: false, padding: 12 } };
    const color = { field: "series", type: "nominal" as const, title: "variant", scale: { domain: series }, sort: series };
    const layers: any[] = [
      { name: "lines", mark: { type: "line", strokeWidth: 1.5, opacity: 0.8 }, encoding: { x, y, color, detail: { field: "series" }, order: { field: "l0" } } },
      { name: "points", mark: { type: "point", filled: true, size: 55, opacity: 1 }, encoding: { x, y, color, shape: { field: "series", type: "nominal", title: "variant", scale: { domain: series }, sort: series }, description: { field: "label" } } },
    ];
    if (m.lowerIsBetter !== null) {
      layers.push(
        { name: "frontier", transform: [{ filter: "datum.frontier" }], mark: { type: "line", color: "black", strokeDash: [5, 4], strokeWidth: 1.2, interpolate: "linear" }, encoding: { x, y, order: { field: "l0" } } },
        { name: "frontier_rings", transform: [{ filter: "datum.frontier" }], mark: { type: "point", color: "black", size: 160, strokeWidth: 1.2, filled: false }, encoding: { x, y } },
      );
    }
    plots.push({ id: m.id, title: m.title, caption: m.caption, spec: chart(m.title, { data: { values: pts }, layer: layers }) });
  }
  return plots;
}

/** Dead and dense latents per run, as bars grouped by series. */
export function deadDensePlot(runs: ReportRun[], series: string[]): Plot | null {
  const rows = runs.filter((r) => r.eval).flatMap((r) => [
    { run: r.id, series: r.series, measure: "dead (fire on no eval token)", value: r.eval!.dead_frac, label: `${r.id}: dead_frac=${r.eval!.dead_frac}` },
    { run: r.id, series: r.series, measure: "dense (fire on > 10% of tokens)", value: r.eval!.dense_frac, label: `${r.id}: dense_frac=${r.eval!.dense_frac}` },
  ]);
  if (rows.length === 0) return null;
  const order = runs.filter((r) => r.eval).sort((a, b) => series.indexOf(a.series) - series.indexOf(b.series) || a.eval!.l0 - b.eval!.l0).map((r) => r.id);
  const spec = chart("Dead and dense latents", {
    data: { values: rows },
    height: { step: 9 },
    mark: { type: "bar" },
    encoding: {
      y: { field: "run", type: "nominal", sort: order, title: null, axis: { labelFontSize: 9 } },
      yOffset: { field: "measure" },
      x: { field: "value", type: "quantitative", title: "fraction of latents", axis: { format: "%" } },
      color: { field: "measure", type: "nominal", title: null, scale: { range: ["#4c4c4c", "#e45756"] } },
      description: { field: "label" },
    },
  }, { height: undefined });
  return { id: "dead-dense", title: "Dead and dense latents", caption: "Per run (sorted by variant, then L0): latents that never fire on the evaluation tokens, and latents that fire on more than 10% of them.", spec };
}

/** Latent firing-density histograms (latents per decade of firing rate), one panel per series with its runs overlaid. */
export function densityPlot(runs: ReportRun[], series: string[]): Plot | null {
  const bins = ["dead", "[-8,-7)", "[-7,-6)", "[-6,-5)", "[-5,-4)", "[-4,-3)", "[-3,-2)", "[-2,-1)", "[-1,0)", "[-1,0]"];
  const rows: { run: string; series: string; bin: string; order: number; latents: number; l0: number }[] = [];
  const present = new Set<string>();
  for (const r of runs) {
    const h = r.eval?.density_histogram;
    if (!h) continue;
    for (const k of Object.keys(h)) present.add(k);
  }
  const order = [...present].sort((a, b) => binOrder(a, bins) - binOrder(b, bins));
  for (const r of runs) {
    const h = r.eval?.density_histogram;
    if (!h) continue;
    for (const b of order) rows.push({ run: r.id, series: r.series, bin: b, order: order.indexOf(b), latents: h[b] ?? 0, l0: r.eval!.l0 });
  }
  if (rows.length === 0) return null;
  const spec = chart("Latent density histograms", {
    data: { values: rows },
    facet: { field: "series", type: "nominal", title: null, sort: series, header: { labelFontSize: 12 } },
    columns: 4,
    spec: {
      width: 170, height: 110,
      mark: { type: "line", interpolate: "step", point: { size: 12 }, strokeWidth: 1.3, opacity: 0.85 },
      encoding: {
        x: { field: "bin", type: "ordinal", sort: order, title: "log10 firing rate", axis: { labelAngle: -45, labelFontSize: 9 } },
        y: { field: "latents", type: "quantitative", title: "latents" },
        color: { field: "l0", type: "quantitative", title: "run L0", scale: { type: "log", scheme: "viridis" } },
        detail: { field: "run" },
      },
    },
  }, { width: undefined, height: undefined });
  return { id: "density", title: "Latent density histograms", caption: "How often each latent fires: latents per decade of firing rate on the evaluation tokens (\"dead\": never), one panel per variant with its runs overlaid, coloured by the run's L0.", spec };
}

function binOrder(b: string, known: string[]): number {
  if (b === "dead") return -100;
  const m = /^\[(-?\d+),/.exec(b);
  return m ? Number(m[1]) : known.length;
}

/** Training curves from metrics.csv: one plot per quantity, every run a line (coloured by series), phase ends marked. */
export function curvePlots(runs: ReportRun[], series: string[]): Plot[] {
  const withRows = runs.filter((r) => r.metrics.length > 0);
  if (withRows.length === 0) return [];
  const quantities: { key: "loss" | "fvu" | "l0" | "dead_frac"; title: string; axis: string; log: boolean }[] = [
    { key: "loss", title: "Training loss", axis: "loss (interval mean)", log: true },
    { key: "fvu", title: "Training FVU", axis: "FVU (last batch of the interval)", log: true },
    { key: "l0", title: "Training L0", axis: "L0 (last batch of the interval)", log: true },
    { key: "dead_frac", title: "Dead latents during training", axis: "dead fraction (token counters)", log: false },
  ];
  // a fine-tune continues its parent's curve: its tokens count on from the parent's last row
  const offset = new Map<string, number>();
  for (const r of withRows) {
    const parent = r.finetuneOf ? withRows.find((p) => p.id === r.finetuneOf) : undefined;
    if (parent) offset.set(r.id, parent.metrics[parent.metrics.length - 1].tokens);
  }
  const ends = withRows.flatMap((r) => [
    ...r.phaseEnds.map((p) => ({ run: r.id, tokens: p.tokens + (offset.get(r.id) ?? 0) })),
    ...(offset.has(r.id) ? [{ run: r.id, tokens: offset.get(r.id)! }] : []),
  ]);
  return quantities.map((q) => {
    const values = withRows.flatMap((r) => r.metrics.filter((m) => Number.isFinite(m[q.key]) && (!q.log || m[q.key] > 0)).map((m) => ({ run: r.id, series: r.series, tokens: m.tokens + (offset.get(r.id) ?? 0), value: m[q.key], phase: m.phase })));
    const layers: any[] = [
      {
        mark: { type: "line", strokeWidth: 1.2, opacity: 0.75 },
        encoding: {
          x: { field: "tokens", type: "quantitative", title: "training tokens", axis: { format: "~s" } },
          y: { field: "value", type: "quantitative", title: q.axis, scale: q.log ? { type: "log", nice: false } : { nice: false }, ...(q.key === "dead_frac" ? { axis: { format: "%" } } : {}) },
          color: { field: "series", type: "nominal", title: "variant", scale: { domain: series }, sort: series },
          detail: { field: "run" },
        },
      },
    ];
    if (ends.length) {
      layers.push({ data: { values: ends }, mark: { type: "rule", strokeDash: [3, 3], color: "#888" }, encoding: { x: { field: "tokens", type: "quantitative" } } });
    }
    return {
      id: `curves-${q.key.replace("_", "-")}`,
      title: q.title,
      caption: `${q.axis} against training tokens, from each run's metrics.csv (a fine-tune continues from its parent's end)${ends.length ? "; dashed rules mark where a phase ended" : ""}.`,
      spec: chart(q.title, { data: { values }, layer: layers }),
    };
  });
}

function chart(title: string, body: Record<string, unknown>, size: { width?: number; height?: number } = { width: WIDTH, height: HEIGHT }): TopLevelSpec {
  const dims: Record<string, number> = {};
  if (size.width !== undefined) dims.width = size.width;
  if (size.height !== undefined) dims.height = size.height;
  return { $schema: "https://vega.github.io/schema/vega-lite/v6.json", title, ...dims, ...body, config: CONFIG, background: "white", padding: 8 } as unknown as TopLevelSpec;
}

/** All plots for one dataset's runs. */
export function datasetPlots(runs: ReportRun[]): Plot[] {
  const series = [...new Set(runs.map((r) => r.series))];
  return [...l0Plots(runs, series), deadDensePlot(runs, series), densityPlot(runs, series), ...curvePlots(runs, series)].filter((p): p is Plot => p !== null);
}
