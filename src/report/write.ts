// `sae report`: the runs' plots as .svg and .png, table.csv, and report.html, a single
// self-contained page (the SVGs inlined, styles inline, no scripts, nothing fetched).
import fs from "node:fs";
import path from "node:path";
import { stringify } from "csv-stringify/sync";
import { writeFileAtomic } from "../io/run.ts";
import type { ReportRun } from "./collect.ts";
import { datasetPlots, L0_METRICS, metricPoints, type Plot } from "./plots.ts";
import { namespaceIds, renderSvg, svgToPng } from "./render.ts";
import { count } from "../text.ts";

export interface ReportOptions {
  out: string;
  /** PNG pixels per SVG unit */
  scale: number;
  title?: string;
}

export interface WrittenPlot { dataset: string; id: string; title: string; svgFile: string; pngFile: string; width: number; height: number }

export interface ReportSummary { html: string; table: string; plots: WrittenPlot[]; missing: ReportRun[] }

export async function writeReport(runs: ReportRun[], o: ReportOptions): Promise<ReportSummary> {
  fs.mkdirSync(o.out, { recursive: true });
  const datasets = [...new Set(runs.map((r) => r.dataset))];
  const multi = datasets.length > 1;
  const plots: WrittenPlot[] = [];
  const sections: string[] = [];
  for (const ds of datasets) {
    const members = runs.filter((r) => r.dataset === ds);
    const evaluated = members.filter((r) => r.eval);
    const missing = members.filter((r) => !r.eval);
    const figures: string[] = [];
    for (const p of datasetPlots(members)) {
      const stem = multi ? `${slug(ds)}-${p.id}` : p.id;
      const r = await renderSvg(p.spec);
      const svgFile = path.join(o.out, `${stem}.svg`), pngFile = path.join(o.out, `${stem}.png`);
      writeFileAtomic(svgFile, r.svg);
      writeBinaryAtomic(pngFile, svgToPng(r.svg, o.scale));
      plots.push({ dataset: ds, id: p.id, title: p.title, svgFile, pngFile, width: r.width, height: r.height });
      figures.push(figure(p, stem, namespaceIds(r.svg, stem)));
    }
    sections.push(section(ds, members, evaluated, missing, figures));
  }
  const table = path.join(o.out, "table.csv");
  writeFileAtomic(table, tableCsv(runs));
  const html = path.join(o.out, "report.html");
  writeFileAtomic(html, page(o.title ?? `SAE comparison: ${datasets.join(", ")}`, runs, sections));
  return { html, table, plots, missing: runs.filter((r) => !r.eval) };
}

function writeBinaryAtomic(file: string, data: Buffer): void {
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, data);
  fs.renameSync(tmp, file);
}

const slug = (s: string) => s.replace(/[^A-Za-z0-9_.-]+/g, "-").replace(/^-+|-+$/g, "");

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

/** the table's columns: header, and the value of a run */
const columns = (onFrontier: (r: ReportRun) => boolean): [string, (r: ReportRun) => string | number | undefined][] => [
  ["dataset", (r) => r.dataset],
  ["run", (r) => r.id],
  ["series", (r) => r.series],
  ["variant", (r) => r.variant],
  ["flavour", (r) => r.flavour ?? ""],
  ["knob", (r) => r.knob],
  ["finetune_of", (r) => r.finetuneOf ?? ""],
  ["status", (r) => r.status?.status ?? "missing"],
  ["steps", (r) => r.status?.step],
  ["l0", (r) => r.eval?.l0],
  ["fvu", (r) => r.eval?.fvu],
  ["mse", (r) => r.eval?.mse],
  ["explained_variance", (r) => r.eval?.explained_variance],
  ["gamma", (r) => r.eval?.gamma],
  ["l2_ratio", (r) => r.eval?.l2_ratio],
  ["cosine", (r) => r.eval?.cosine],
  ["dead_frac", (r) => r.eval?.dead_frac],
  ["dense_frac", (r) => r.eval?.dense_frac],
  ["mmcs_recall", (r) => r.eval?.ground_truth?.mmcs_recall],
  ["mmcs_precision", (r) => r.eval?.ground_truth?.mmcs_precision],
  ["recovered_0_9", (r) => r.eval?.ground_truth?.recovered_0_9],
  ["ce_clean", (r) => r.eval?.downstream?.ce_clean],
  ["ce_sae", (r) => r.eval?.downstream?.ce_sae],
  ["ce_loss_recovered", (r) => r.eval?.downstream?.ce_loss_recovered],
  ["delta_loss", (r) => r.eval?.downstream?.delta_loss],
  ["kl_sae", (r) => r.eval?.downstream?.kl_sae],
  ["kl_score", (r) => r.eval?.downstream?.kl_score],
  // which positions the CE and KL numbers patch and score (docs/downstream.md); runs evaluated before conventions used sae's
  ["ce_convention", (r) => (r.eval?.downstream ? ((r.eval.downstream as { convention?: string }).convention ?? "sae") : "")],
  ["on_fvu_frontier", (r) => (r.eval ? (onFrontier(r) ? "yes" : "no") : "")],
  ["note", (r) => r.problem ?? ""],
];

function tableCsv(runs: ReportRun[]): string {
  const fvu = L0_METRICS.find((m) => m.id === "fvu-l0")!;
  const onFrontier = new Set<string>();
  for (const ds of new Set(runs.map((r) => r.dataset))) {
    for (const p of metricPoints(runs.filter((r) => r.dataset === ds), fvu)) if (p.frontier) onFrontier.add(`${ds}\u0000${p.run}`);
  }
  const cols = columns((r) => onFrontier.has(`${r.dataset}\u0000${r.id}`));
  return stringify([cols.map((c) => c[0]), ...runs.map((r) => cols.map(([, get]) => get(r) ?? ""))]);
}

function figure(p: Plot, stem: string, svg: string): string {
  return `<figure id="${esc(stem)}" class="plot">
${svg.replace(/^<svg /, `<svg role="img" aria-label="${esc(p.title)}" `)}
<figcaption><b>${esc(p.title)}.</b> ${esc(p.caption)} <a href="${esc(stem)}.svg">SVG</a> · <a href="${esc(stem)}.png">PNG</a></figcaption>
</figure>`;
}

const fmt = (v: number | undefined, digits = 4) => (v === undefined || !Number.isFinite(v) ? "" : Math.abs(v) >= 100 ? v.toFixed(1) : v.toPrecision(digits));

function section(ds: string, members: ReportRun[], evaluated: ReportRun[], missing: ReportRun[], figures: string[]): string {
  const lm = evaluated.some((r) => r.eval?.downstream);
  const gt = evaluated.some((r) => r.eval?.ground_truth);
  const conventions = [...new Set(evaluated.flatMap((r) => (r.eval?.downstream ? [(r.eval.downstream as { convention?: string }).convention ?? "sae"] : [])))];
  const head = ["run", "variant", "knob", "L0", "FVU", "MSE", "γ", "dead", "dense", ...(gt ? ["recovered"] : []), ...(lm ? [`CE rec. (${conventions.join(", ")} convention)`, "KL"] : [])];
  const rows = members.map((r) => {
    const e = r.eval;
    if (!e) return `<tr class="missing"><td>${esc(r.id)}</td><td>${esc(r.series)}</td><td>${esc(r.knob)}</td><td colspan="${head.length - 3}">${esc(r.problem ?? "no evaluation")}</td></tr>`;
    const cells = [fmt(e.l0, 3), fmt(e.fvu), fmt(e.mse), fmt(e.gamma, 3), `${(100 * e.dead_frac).toFixed(1)}%`, `${(100 * e.dense_frac).toFixed(1)}%`];
    if (gt) cells.push(e.ground_truth ? `${(100 * e.ground_truth.recovered_0_9).toFixed(1)}%` : "");
    if (lm) cells.push(fmt(e.downstream?.ce_loss_recovered), fmt(e.downstream?.kl_sae));
    return `<tr><td>${esc(r.id)}</td><td>${esc(r.series)}</td><td>${esc(r.knob)}</td>${cells.map((c) => `<td class="num">${esc(c)}</td>`).join("")}</tr>`;
  });
  const note = missing.length
    ? `<p class="warn">${missing.length} of ${count(members.length, "run")} ${missing.length === 1 ? "has" : "have"} no evaluation and are left out of the plots: ${missing.map((r) => `${esc(r.id)} (${esc(r.problem ?? "")})`).join("; ")}.</p>`
    : "";
  const none = evaluated.length === 0 ? `<p class="warn">No run of ${esc(ds)} has an evaluation yet, so there is nothing to plot against L0.</p>` : "";
  return `<section>
<h2>${esc(ds)}</h2>
<p>${count(members.length, "run")}, ${evaluated.length} evaluated.</p>
${note}${none}
${figures.join("\n")}
<table>
<thead><tr>${head.map((h) => `<th>${esc(h)}</th>`).join("")}</tr></thead>
<tbody>
${rows.join("\n")}
</tbody>
</table>
</section>`;
}

function page(title: string, runs: ReportRun[], sections: string[]): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>${esc(title)}</title>
<style>
body { font-family: "DejaVu Sans", Verdana, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; line-height: 1.4; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.25em; border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
figure.plot { margin: 1.5em 0; } figure.plot svg { max-width: 100%; height: auto; display: block; }
figcaption { font-size: .9em; color: #444; max-width: 60em; }
table { border-collapse: collapse; font-size: .85em; margin-top: 1em; }
th, td { border-bottom: 1px solid #e4e4e4; padding: .2em .6em; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.missing td { color: #a33; }
.warn { color: #a33; }
</style>
</head>
<body>
<h1>${esc(title)}</h1>
<p>${count(runs.length, "run")}; written ${esc(new Date().toISOString().slice(0, 16).replace("T", " "))} UTC by <code>sae report</code>. Every figure is also a file beside this page (.svg and .png); <a href="table.csv">table.csv</a> has every metric of every run.</p>
${sections.join("\n")}
</body>
</html>
`;
}
