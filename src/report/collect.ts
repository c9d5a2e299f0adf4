// What a report is made of: the runs named on the command line (run folders, sweep folders, folders
// of runs, or run ids), each with its config, status, evaluation and metric log. A run without a
// usable evaluation stays in the list with the reason, so the report can say so.
import fs from "node:fs";
import path from "node:path";
import { loadConfig } from "../config/load.ts";
import type { Config } from "../config/schema.ts";
import { variantDef } from "../sae/index.ts";
import { knobText } from "../sae/variant.ts";
import type { EvalResult } from "../eval/metrics.ts";
import { findRun, listRunIds, readStatus, type RunStatus } from "../io/run.ts";
import { SaeError } from "../errors.ts";

export interface MetricRow { step: number; phase: string; tokens: number; loss: number; mse: number; fvu: number; l0: number; dead_frac: number }

export interface ReportRun {
  id: string;
  dir: string;
  /** runs are compared within a dataset: a sweep's name, or what the data is for loose runs */
  dataset: string;
  /** the line a run belongs to in the plots: its sweep group, or its variant */
  series: string;
  variant: string;
  flavour: string | null;
  /** the sparsity setting, e.g. "k=8", "λ=0.3" */
  knob: string;
  finetuneOf: string | null;
  status: RunStatus | null;
  /** null when the run has no usable evaluation; problem says why */
  eval: EvalResult | null;
  problem: string | null;
  metrics: MetricRow[];
  /** tokens at which each phase but the last ended (from metrics.csv) */
  phaseEnds: { phase: string; tokens: number }[];
}

/** Resolves the report's arguments to runs, in the order given (a sweep's in its sweep.json order). */
export function collectRuns(args: string[], runsDir: string): ReportRun[] {
  const out: ReportRun[] = [];
  const seen = new Set<string>();
  const add = (dir: string, dataset: string | null, group: string | null) => {
    const abs = path.resolve(dir);
    if (seen.has(abs)) return;
    seen.add(abs);
    out.push(readRun(abs, dataset, group));
  };
  for (const arg of args) {
    const sweepJson = path.join(arg, "sweep.json");
    if (fs.existsSync(sweepJson)) {
      let doc: { name: string; runs: { name: string; group: string }[] };
      try {
        doc = JSON.parse(fs.readFileSync(sweepJson, "utf8"));
      } catch (e) {
        throw new SaeError("data", `${sweepJson} is not readable JSON: ${(e as Error).message}`, "it is rewritten by the next `sae sweep` of that sweep file");
      }
      for (const r of doc.runs) add(path.join(arg, r.name), doc.name, r.group);
    } else if (fs.existsSync(path.join(arg, "config.yaml"))) {
      add(arg, null, null);
    } else if (fs.existsSync(arg) && fs.statSync(arg).isDirectory() && listRunIds(arg).length > 0) {
      for (const id of listRunIds(arg)) add(path.join(arg, id), null, null);
    } else {
      add(findRun(runsDir, arg), null, null);
    }
  }
  return out;
}

function readRun(dir: string, dataset: string | null, group: string | null): ReportRun {
  const id = path.basename(dir);
  const base: ReportRun = { id, dir, dataset: dataset ?? "runs", series: group ?? "?", variant: "?", flavour: null, knob: "", finetuneOf: null, status: null, eval: null, problem: null, metrics: [], phaseEnds: [] };
  if (!fs.existsSync(path.join(dir, "config.yaml"))) return { ...base, problem: "not started (no run folder)" };
  let config: Config;
  try {
    config = loadConfig(path.join(dir, "config.yaml")).config;
  } catch (e) {
    return { ...base, problem: `config.yaml unreadable: ${(e as Error).message.split("\n")[0]}` };
  }
  const s = config.sae;
  const def = variantDef(s.variant);
  const flavour = def.flavours ? s.flavour ?? null : null;
  const knob = knobText(def, s);
  const finetuneOf = config.init_from ? path.basename(config.init_from) : null;
  const run: ReportRun = {
    ...base,
    dataset: dataset ?? describeData(config),
    series: group ?? `${s.variant}${flavour && flavour !== def.flavours?.[0] ? `-${flavour}` : ""}${finetuneOf ? "-ft" : ""}`,
    variant: s.variant, flavour, knob, finetuneOf,
    status: readStatus(dir),
  };
  const { rows, phaseEnds } = readMetrics(path.join(dir, "metrics.csv"));
  run.metrics = rows;
  run.phaseEnds = phaseEnds;
  const evalFile = path.join(dir, "eval.json");
  const st = run.status?.status ?? "unknown";
  if (!fs.existsSync(evalFile)) {
    run.problem = st === "failed" ? `failed: ${run.status?.error ?? "no error recorded"}` : `no evaluation (status ${st}${run.status ? `, step ${run.status.step}/${run.status.steps}` : ""})`;
    return run;
  }
  try {
    const e = JSON.parse(fs.readFileSync(evalFile, "utf8")) as EvalResult;
    const missing = ["l0", "fvu", "mse", "gamma", "l2_ratio", "dead_frac", "dense_frac"].filter((k) => typeof (e as unknown as Record<string, unknown>)[k] !== "number");
    if (missing.length) run.problem = `eval.json lacks ${missing.join(", ")}`;
    else run.eval = e;
  } catch (err) {
    run.problem = `eval.json unreadable: ${(err as Error).message}`;
  }
  if (run.eval && st === "failed") {
    run.problem = `failed after an evaluation: ${run.status?.error ?? ""}`;
    run.eval = null;
  }
  return run;
}

function describeData(c: Config): string {
  const d = c.data;
  if (d.source === "synthetic") return `synthetic D=${d.d_in} (${d.synthetic.n_features} features)`;
  if (d.source === "model") return `${path.basename(d.model!.checkpoint)} layer ${d.model!.layer} ${d.model!.site}`;
  if (d.source === "file") return path.basename(d.file!.path);
  return d.source;
}

/** metrics.csv's rows (a missing or damaged file gives none) and where its phases end */
export function readMetrics(file: string): { rows: MetricRow[]; phaseEnds: { phase: string; tokens: number }[] } {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch {
    return { rows: [], phaseEnds: [] };
  }
  const lines = text.split("\n").filter((l) => l.length > 0);
  if (lines.length < 2) return { rows: [], phaseEnds: [] };
  const head = lines[0].split(",");
  const col = (name: string) => head.indexOf(name);
  const rows: MetricRow[] = [];
  for (const line of lines.slice(1)) {
    const f = line.split(",");
    if (f.length !== head.length) continue;
    const num = (name: string) => Number(f[col(name)]);
    rows.push({ step: num("step"), phase: f[col("phase")], tokens: num("tokens"), loss: num("loss"), mse: num("mse"), fvu: num("fvu"), l0: num("l0"), dead_frac: num("dead_frac") });
  }
  const phaseEnds: { phase: string; tokens: number }[] = [];
  for (let i = 1; i < rows.length; i++) if (rows[i].phase !== rows[i - 1].phase) phaseEnds.push({ phase: rows[i - 1].phase, tokens: rows[i - 1].tokens });
  return { rows, phaseEnds };
}
