// `sae report`: every plotted point is the run's eval.json value, the Pareto frontier is the right
// set, SVGs parse, PNGs decode at the size asked, table.csv holds the numbers, runs whose
// evaluation is missing or broken are reported instead of crashing the report, and the HTML,
// opened in headless Chromium, shows every plot with no console errors.
import { test, before } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { XMLParser, XMLValidator } from "fast-xml-parser";
import { PNG } from "pngjs";
import { cli, tmpDir } from "./helpers.ts";
import { collectRuns } from "../src/report/collect.ts";
import { datasetPlots } from "../src/report/plots.ts";
import { renderSvg } from "../src/report/render.ts";

const BASE = `name: rep
seed: 2
data:
  d_in: 16
  synthetic: {n_features: 32, mean_active: 3, magnitude_min: 0.5}
  eval_tokens: 1024
  norm_estimate_tokens: 1024
sae: {d_sae: 64}
train: {steps: 60, batch_size: 128, lr: 0.004, log_every: 10, warmup_steps: 5, sparsity_warmup_steps: 10, dead_tokens_threshold: 4000}
`;

let dir = "", runs = "", lmSweep = "";
const EVALUATED = ["topk-k4", "topk-k8", "standard-l1", "standard-l1-ft"];

before(async () => {
  dir = tmpDir("sae-report-");
  runs = path.join(dir, "runs");
  const cfg = path.join(dir, "base.yaml");
  fs.writeFileSync(cfg, BASE);
  const train = async (id: string, ...sets: string[]) => {
    const r = await cli(["train", cfg, "--runs-dir", runs, "--run-id", id, "--threads", "1", ...sets.flatMap((s) => ["--set", s])]);
    assert.equal(r.code, 0, r.err);
  };
  await train("topk-k4", "sae.k=4");
  await train("topk-k8", "sae.k=8");
  await train("standard-l1", "sae.variant=standard", "sae.l1_coefficient=0.1");
  const ft = await cli(["finetune", "standard-l1", "--runs-dir", runs, "--run-id", "standard-l1-ft", "--mode", "decoder", "--steps", "20", "--threads", "1"]);
  assert.equal(ft.code, 0, ft.err);
  // a language-model sweep's folder, made from copies of these runs with downstream numbers added
  lmSweep = path.join(dir, "lm");
  fs.mkdirSync(lmSweep);
  const names = ["topk-k4", "topk-k8"];
  for (const [i, n] of names.entries()) {
    fs.cpSync(path.join(runs, n), path.join(lmSweep, n), { recursive: true });
    const f = path.join(lmSweep, n, "eval.json");
    const e = JSON.parse(fs.readFileSync(f, "utf8"));
    e.downstream = { model: "m.bin", layer: 1, site: "resid_pre", sequences: 4, tokens: 100, ce_clean: 1.8, ce_sae: 1.9 + 0.01 * i, ce_zero_ablation: 7, ce_mean_ablation: 7.3, ce_loss_recovered: 0.97 - 0.013 * i, ce_loss_recovered_mean: 0.975, delta_loss: 0.1 + 0.01 * i, kl_sae: 0.14 + 0.003 * i, kl_zero_ablation: 5, kl_mean_ablation: 5.5, kl_score: 0.97 };
    fs.writeFileSync(f, JSON.stringify(e));
  }
  fs.writeFileSync(path.join(lmSweep, "sweep.json"), JSON.stringify({ format: "sae-sweep", version: 1, name: "lm", runs: [...names.map((n) => ({ name: n, group: "topk" })), { name: "never-started", group: "topk" }] }));
});

const evalOf = (runDir: string) => JSON.parse(fs.readFileSync(path.join(runDir, "eval.json"), "utf8"));

/** the point marks of an SVG: aria-label and translate(x, y) */
function points(svg: string): { label: string; x: number; y: number }[] {
  const out: { label: string; x: number; y: number }[] = [];
  for (const m of svg.matchAll(/<path aria-label="([^"]*)" role="graphics-symbol" aria-roledescription="point" transform="translate\(([-\d.e]+),([-\d.e]+)\)"/g)) out.push({ label: m[1], x: Number(m[2]), y: Number(m[3]) });
  return out;
}

test("every plotted point is the run's eval.json value, at the position the plot's scales give it; the frontier is the Pareto set", async () => {
  const out = path.join(dir, "report1");
  const r = await cli(["report", runs, "--out", out]);
  assert.equal(r.code, 0, r.err);
  const evals = Object.fromEntries(EVALUATED.map((n) => [n, evalOf(path.join(runs, n))]));
  const metrics: Record<string, (e: any) => number> = {
    "fvu-l0": (e) => e.fvu, "mse-l0": (e) => e.mse, "gamma-l0": (e) => e.gamma, "l2-ratio-l0": (e) => e.l2_ratio,
    "recovered-l0": (e) => e.ground_truth.recovered_0_9, "mmcs-l0": (e) => e.ground_truth.mmcs_recall,
  };
  for (const [id, get] of Object.entries(metrics)) {
    const svg = fs.readFileSync(path.join(out, `${id}.svg`), "utf8");
    const pts = points(svg).filter((p) => /: l0=/.test(p.label));
    assert.deepEqual(pts.map((p) => p.label.split(":")[0]).sort(), [...EVALUATED].sort(), id);
    for (const p of pts) {
      const m = /^(.+): l0=([^,]+), [a-z0-9-]+=(.+)$/.exec(p.label)!;
      assert.equal(Number(m[2]), evals[m[1]].l0, `${id} ${m[1]} l0`);
      assert.equal(Number(m[3]), get(evals[m[1]]), `${id} ${m[1]} value`);
    }
  }
  // positions: the written SVG's points sit where the plot's own scales put the eval.json values
  const collected = collectRuns([runs], "runs");
  const fvuPlot = datasetPlots(collected).find((p) => p.id === "fvu-l0")!;
  const { view } = await renderSvg(fvuPlot.spec);
  const x = view.scale("x"), y = view.scale("y");
  const written = points(fs.readFileSync(path.join(out, "fvu-l0.svg"), "utf8")).filter((p) => /: l0=/.test(p.label));
  for (const p of written) {
    const e = evals[p.label.split(":")[0]];
    assert.ok(Math.abs(p.x - x(e.l0)) < 1e-6 && Math.abs(p.y - y(e.fvu)) < 1e-6, `${p.label} drawn at (${p.x}, ${p.y})`);
  }
  // frontier: a run is on it iff no other run has L0 ≤ its L0 and a lower FVU
  const table = fs.readFileSync(path.join(out, "table.csv"), "utf8").trim().split("\n").map((l) => l.split(","));
  const col = (name: string) => table[0].indexOf(name);
  for (const row of table.slice(1)) {
    const me = evals[row[col("run")]];
    const dominated = EVALUATED.some((n) => n !== row[col("run")] && evals[n].l0 <= me.l0 && evals[n].fvu < me.fvu);
    assert.equal(row[col("on_fvu_frontier")], dominated ? "no" : "yes", row[col("run")]);
    assert.equal(Number(row[col("fvu")]), me.fvu);
    assert.equal(Number(row[col("mse")]), me.mse);
  }
  assert.equal(table.length, 1 + EVALUATED.length);
});

test("SVGs parse, PNGs decode at the size asked and are not blank, the HTML is self-contained", async () => {
  const out = path.join(dir, "report2");
  const r = await cli(["report", runs, lmSweep, "--out", out, "--scale", "1.5"]);
  assert.equal(r.code, 0, r.err);
  const svgs = fs.readdirSync(out).filter((f) => f.endsWith(".svg"));
  // two datasets: each plot file is prefixed with its dataset; the language-model one has CE and KL plots
  assert.ok(svgs.includes("lm-ce-recovered-l0.svg") && svgs.includes("lm-kl-l0.svg"), svgs.join(" "));
  assert.ok(!svgs.some((f) => f.includes("ce-recovered") && !f.startsWith("lm-")), "CE plots only where there is downstream data");
  for (const f of svgs) {
    const svg = fs.readFileSync(path.join(out, f), "utf8");
    assert.equal(XMLValidator.validate(svg), true, f);
    const attrs = new XMLParser({ ignoreAttributes: false }).parse(svg).svg;
    const w = Number(attrs["@_width"]), h = Number(attrs["@_height"]);
    const png = PNG.sync.read(fs.readFileSync(path.join(out, f.replace(/\.svg$/, ".png"))));
    assert.equal(png.width, Math.round(w * 1.5), f);
    assert.equal(png.height, Math.round(h * 1.5), f);
    let ink = 0;
    for (let i = 0; i < png.data.length; i += 4) if (png.data[i] < 200 || png.data[i + 1] < 200 || png.data[i + 2] < 200) ink++;
    assert.ok(ink / (png.width * png.height) > 0.01, `${f}: only ${ink} dark pixels`);
  }
  const lmPts = points(fs.readFileSync(path.join(out, "lm-ce-recovered-l0.svg"), "utf8")).filter((p) => /: l0=/.test(p.label));
  assert.deepEqual(lmPts.map((p) => Number(p.label.split("=").pop())).sort(), ["topk-k4", "topk-k8"].map((n) => evalOf(path.join(lmSweep, n)).downstream.ce_loss_recovered).sort());
  const html = fs.readFileSync(path.join(out, "report.html"), "utf8");
  assert.doesNotMatch(html, /<script|<link|<img|<iframe|@import|src=/i, "nothing loaded from elsewhere");
  for (const m of html.matchAll(/href="([^"]*)"/g)) assert.ok(!/^[a-z]+:/i.test(m[1]) && !m[1].startsWith("//"), `link ${m[1]}`);
  assert.equal((html.match(/<figure /g) ?? []).length, svgs.length, "every plot is inlined");
  assert.match(html, /never-started \(not started \(no run folder\)\)/);
  // ids are unique across the inlined SVGs (clip paths of one plot must not clip another)
  const ids = [...html.matchAll(/\sid="([^"]+)"/g)].map((m) => m[1]);
  assert.equal(new Set(ids).size, ids.length);
});

test("runs with a missing, broken or failed evaluation are listed with the reason; the report is still written", async () => {
  const broken = path.join(dir, "broken");
  fs.cpSync(runs, broken, { recursive: true });
  fs.rmSync(path.join(broken, "topk-k8", "eval.json"));
  fs.writeFileSync(path.join(broken, "standard-l1", "eval.json"), "{ not json");
  const st = JSON.parse(fs.readFileSync(path.join(broken, "standard-l1-ft", "status.json"), "utf8"));
  fs.writeFileSync(path.join(broken, "standard-l1-ft", "status.json"), JSON.stringify({ ...st, status: "failed", error: "loss became NaN at step 12" }));
  fs.rmSync(path.join(broken, "standard-l1-ft", "eval.json"));
  const out = path.join(dir, "report3");
  const r = await cli(["report", broken, "--out", out]);
  assert.equal(r.code, 0, r.err);
  assert.match(r.err, /warning: topk-k8: no evaluation \(status done, step 60\/60\); left out of the plots/);
  assert.match(r.err, /warning: standard-l1: eval\.json unreadable/);
  assert.match(r.err, /warning: standard-l1-ft: failed: loss became NaN at step 12/);
  const html = fs.readFileSync(path.join(out, "report.html"), "utf8");
  assert.match(html, /3 of 4 runs have no evaluation/);
  const fvu = points(fs.readFileSync(path.join(out, "fvu-l0.svg"), "utf8")).filter((p) => /: l0=/.test(p.label));
  assert.deepEqual(fvu.map((p) => p.label.split(":")[0]), ["topk-k4"]);
  const table = fs.readFileSync(path.join(out, "table.csv"), "utf8");
  assert.match(table, /standard-l1-ft,.*,failed,.*failed: loss became NaN at step 12/);

  // nothing evaluated at all: still a report, which says so
  for (const n of ["topk-k4"]) fs.rmSync(path.join(broken, n, "eval.json"));
  const none = await cli(["report", broken, "--out", path.join(dir, "report4")]);
  assert.equal(none.code, 0, none.err);
  assert.match(fs.readFileSync(path.join(dir, "report4", "report.html"), "utf8"), /No run of .* has an evaluation yet/);
  const bad = await cli(["report", path.join(dir, "nowhere"), "--out", path.join(dir, "report5")]);
  assert.equal(bad.code, 2);
  assert.match(bad.err, /no run ".*nowhere" in runs\//);
});

const CHROMIUM = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].find((p) => fs.existsSync(p));
if (!CHROMIUM && process.env.CI) throw new Error("chromium is missing under CI (.ci/run installs Debian's chromium)");
const skipChromium = CHROMIUM ? false : "Debian's chromium is not installed (.ci/run installs it)";

test("report.html in headless Chromium: every plot is shown (not blank), no console errors, nothing fetched", { skip: skipChromium, timeout: 120_000 }, async () => {
  const out = path.join(dir, "report-browser");
  const r = await cli(["report", runs, lmSweep, "--out", out]);
  assert.equal(r.code, 0, r.err);
  const nPlots = fs.readdirSync(out).filter((f) => f.endsWith(".svg")).length;
  const { launch } = await import("puppeteer-core");
  const browser = await launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"] });
  try {
    const page = await browser.newPage();
    const problems: string[] = [];
    page.on("console", (m) => { if (m.type() === "error" || m.type() === "warn") problems.push(`console ${m.type()}: ${m.text()}`); });
    page.on("pageerror", (e) => problems.push(`page error: ${(e as Error).message}`));
    page.on("request", (req) => { if (!req.url().startsWith("file://")) problems.push(`request to ${req.url()}`); });
    page.on("requestfailed", (req) => problems.push(`failed request ${req.url()}`));
    await page.setViewport({ width: 1200, height: 900 });
    await page.goto(`file://${path.join(out, "report.html")}`, { waitUntil: "load" });
    const figures = await page.$$("figure.plot svg");
    assert.equal(figures.length, nPlots);
    for (const [i, fig] of figures.entries()) {
      const box = await fig.boundingBox();
      assert.ok(box && box.width > 100 && box.height > 50, `plot ${i} is ${box?.width}×${box?.height}`);
      const shot = PNG.sync.read(Buffer.from(await fig.screenshot({ type: "png" })));
      let ink = 0;
      for (let p = 0; p < shot.data.length; p += 4) if (shot.data[p] < 200 || shot.data[p + 1] < 200 || shot.data[p + 2] < 200) ink++;
      assert.ok(ink / (shot.width * shot.height) > 0.01, `plot ${i} looks blank in the browser`);
    }
    const full = PNG.sync.read(Buffer.from(await page.screenshot({ type: "png", fullPage: true })));
    assert.ok(full.height > 900);
    assert.deepEqual(problems, []);
  } finally {
    await browser.close();
  }
});
