// The sweep file: a base config and groups of runs made from it. It is checked as strictly as a
// config (unknown keys with a suggestion, every error at file:line), then expanded into runs with
// stable names, and every run's config is validated before anything trains.
//
//   base: ../compare.yaml              the config every run starts from (relative to this file)
//   name: synthetic                    the sweep folder's name (default: the file's name)
//   runs_dir: runs                     where the sweep folder goes (default: the base config's runs_dir)
//   set: {train.steps: 1500}           overrides for every run (train.phases replaces the base's train.steps)
//   groups:
//     - name: standard                 the runs' name prefix (default: the group's sae.variant)
//       set: {sae.variant: standard}   overrides for this group
//       grid: {sae.l1_coefficient: [0.2, 0.5]}   one run per combination (or runs: a list of override maps)
//     - name: standard-ft
//       finetune: {from: standard, mode: decoder, steps: 300}   one fine-tune per run of group standard
import fs from "node:fs";
import path from "node:path";
import { z } from "zod";
import { writeFileAtomic } from "../io/run.ts";
import { configFromObject, loadConfig, readYamlFile, suggest, yamlPosition, type Override } from "../config/load.ts";
import type { Config } from "../config/schema.ts";
import { ALL_MODES, finetuneConfig } from "../train/finetune.ts";
import { probeData } from "../data/index.ts";
import { SaeError } from "../errors.ts";

const NAME = /^[A-Za-z0-9_.-]+$/;
const name = () => z.string().regex(NAME, "use letters, digits, '.', '_' or '-'");
/** overrides: dotted config keys (sae.k) or nested mappings (sae: {k: 8}), flattened to dotted keys */
const overrides = () => z.record(z.string(), z.unknown());

const FinetuneSchema = z
  .object({
    /** the group whose runs are fine-tuned (an earlier group) */
    from: name(),
    /** what trains (the variant's fine-tuning modes, e.g. decoder), or freeze: groups or parameters that do not */
    mode: z.enum(ALL_MODES as [string, ...string[]]).optional(),
    freeze: z.array(z.string().min(1)).optional(),
    /** default: a tenth of the parent's steps */
    steps: z.number().int().min(1).optional(),
    lr: z.number().positive().optional(),
    /** sparsity coefficient during the fine-tune; default 0 (penalty off) */
    penalty: z.number().min(0).optional(),
  })
  .strict();

const GroupSchema = z
  .object({
    name: name().optional(),
    set: overrides().optional(),
    /** key → list of values: one run per combination (the first key varies slowest) */
    grid: z.record(z.string(), z.array(z.unknown()).min(1)).optional(),
    /** a list of override maps: one run each */
    runs: z.array(overrides()).min(1).optional(),
    finetune: FinetuneSchema.optional(),
  })
  .strict();

export const SweepSchema = z
  .object({
    base: z.string().min(1),
    name: name().optional(),
    runs_dir: z.string().min(1).optional(),
    set: overrides().optional(),
    groups: z.array(GroupSchema).min(1),
  })
  .strict();

type SweepFile = z.infer<typeof SweepSchema>;
type Finetune = z.infer<typeof FinetuneSchema>;

/** One override with where it was written. */
export interface SweepOverride { key: string; value: unknown; origin: string }

export interface SweepRun {
  index: number;
  /** the run folder's name inside the sweep folder */
  name: string;
  group: string;
  /** what sets this run apart, in order: the sweep's set, the group's set, its grid or runs entry */
  overrides: SweepOverride[];
  /** the values that name the run (grid / runs entries), for listings */
  varying: Record<string, unknown>;
  /** a fine-tune: the parent run's name and the options */
  finetune?: { parent: string; options: Finetune; origin: string };
  /** 0 for runs from the base config; a fine-tune's is its parent's + 1 (it trains after it) */
  stage: number;
  /** the validated config (data as written: a language model, not yet the harvested copy) */
  config: Config;
}

export interface Sweep {
  file: string;
  base: string;
  name: string;
  /** the sweep folder: the run folders, sweep.json, data/, logs/ */
  dir: string;
  runs: SweepRun[];
}

export interface LoadSweepOptions {
  /** the folder that holds the sweep folder (--runs-dir), overriding the file's runs_dir */
  runsDir?: string;
}

/** Reads, checks and expands a sweep file; every run's config is validated (all problems reported together). */
export function loadSweep(file: string, opts: LoadSweepOptions = {}): Sweep {
  const { raw, doc, lines } = readYamlFile(file, "sweep file", "check the path; configs/sweeps/ has examples");
  const at = (p: (string | number)[]) => yamlPosition(doc, lines, file, p);
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new SaeError("config", `${file}: the top level must be a mapping (base:, groups:, ...), found ${Array.isArray(raw) ? "a list" : typeof raw}`, "see configs/sweeps/");
  }
  const parsed = SweepSchema.safeParse(raw, { reportInput: true });
  if (!parsed.success) {
    const msgs = parsed.error.issues.map((issue) => describe(issue, at));
    throw new SaeError("config", msgs.length === 1 ? msgs[0] : `${msgs.length} problems in the sweep file:\n  ${msgs.join("\n  ")}`, "see configs/sweeps/ for examples");
  }
  const s: SweepFile = parsed.data;
  const fileDir = path.dirname(path.resolve(file));
  const base = path.resolve(fileDir, s.base);
  const baseConfig = loadConfig(base).config; // fails on a broken base by itself (its data is checked with each run)
  const sweepName = s.name ?? path.basename(file).replace(/\.ya?ml$/i, "");
  if (!NAME.test(sweepName)) throw new SaeError("config", `${file}: the sweep's name "${sweepName}" (from the file name) may only hold letters, digits, '.', '_' and '-'`, "set name: in the sweep file");
  const dir = path.resolve(opts.runsDir ?? s.runs_dir ?? baseConfig.runs_dir, sweepName);

  const runs: SweepRun[] = [];
  const byGroup = new Map<string, SweepRun[]>();
  const problems: string[] = [];
  const note = (msg: string) => {
    if (!problems.includes(msg)) problems.push(msg);
  };
  const common = flatten(s.set ?? {}, ["set"], at);
  const runsDirOverride: SweepOverride = { key: "runs_dir", value: dir, origin: `${file}: the sweep folder` };

  s.groups.forEach((g, gi) => {
    const gAt = (...p: (string | number)[]) => at(["groups", gi, ...p]);
    const groupSet = flatten(g.set ?? {}, ["groups", gi, "set"], at);
    if (g.grid && g.runs) throw new SaeError("config", `${gAt("runs")}groups[${gi}]: give grid or runs, not both`, "grid makes every combination; runs lists them one by one");
    const variant = [...groupSet, ...common].find((o) => o.key === "sae.variant")?.value;
    const gName = g.name ?? (g.finetune ? `${g.finetune.from}-ft` : typeof variant === "string" ? variant : baseConfig.sae.variant);
    if (byGroup.has(gName)) throw new SaeError("config", `${gAt("name")}groups[${gi}]: a second group named "${gName}"`, "give each group its own name:");
    // each entry: the overrides that vary, with their positions
    const entries: SweepOverride[][] = g.grid ? gridEntries(g.grid, gi, at) : g.runs ? g.runs.map((r, ri) => flatten(r, ["groups", gi, "runs", ri], at)) : [[]];
    const members: SweepRun[] = [];
    const add = (run: Omit<SweepRun, "index" | "config">, make: () => Config) => {
      const clash = runs.find((r) => r.name === run.name);
      if (clash) throw new SaeError("config", `${gAt()}groups[${gi}]: makes a second run named "${run.name}" (group ${clash.group} has one)`, "give the group another name:");
      let config: Config;
      try {
        config = make();
      } catch (e) {
        if (!(e instanceof SaeError)) throw e;
        note(`run ${run.name}: ${e.message}${e.hint ? ` (${e.hint})` : ""}`);
        config = null as unknown as Config; // reported below, before anything trains
      }
      const full = { ...run, index: runs.length, config };
      runs.push(full);
      members.push(full);
    };

    if (g.finetune) {
      const ft = g.finetune;
      const parents = byGroup.get(ft.from);
      if (!parents) {
        const known = [...byGroup.keys()];
        throw new SaeError("config", `${gAt("finetune", "from")}groups[${gi}].finetune.from: no earlier group named "${ft.from}"${suggest(ft.from, known)}`, known.length ? `groups before this one: ${known.join(", ")}` : "the group to fine-tune must come first");
      }
      if (entries.length > 1 || entries[0].length > 0) throw new SaeError("config", `${gAt("grid")}groups[${gi}]: a fine-tune group makes one run per parent; it takes set:, not grid: or runs:`, "sweep the parents instead");
      const origin = gAt("finetune").replace(/: $/, "");
      for (const parent of parents) {
        const suffix = parent.name.startsWith(parent.group) ? parent.name.slice(parent.group.length) : `-${parent.name}`;
        add(
          { name: `${gName}${suffix}`, group: gName, overrides: groupSet, varying: parent.varying, finetune: { parent: parent.name, options: ft, origin }, stage: parent.stage + 1 },
          () => {
            if (!parent.config) throw new SaeError("config", `its parent ${parent.name} has an invalid config`);
            return finetuneRunConfig(parent.config, path.join(dir, parent.name), ft, origin, groupSet, dir).config;
          },
        );
      }
    } else {
      for (const varying of entries) {
        const all = [...common, ...groupSet, ...varying, runsDirOverride];
        // train.phases set here replaces the base's train.steps (each phase has its own length)
        const phases = all.find((o) => o.key === "train.phases");
        if (phases && !all.some((o) => o.key === "train.steps")) all.push({ key: "train.steps", value: undefined, origin: phases.origin });
        const runName = [gName, ...varying.map(namePart)].join("-");
        add(
          { name: runName, group: gName, overrides: [...common, ...groupSet, ...varying], varying: Object.fromEntries(varying.map((o) => [o.key, o.value])), stage: 0 },
          () => loadConfig(base, all.map(toOverride(fileDir)), { probe: probeData }).config,
        );
      }
    }
    byGroup.set(gName, members);
  });

  if (problems.length) {
    throw new SaeError("config", `${file}: ${problems.length === 1 ? "a run's config is invalid" : `${problems.length} problems in the runs' configs`} (nothing was trained):\n  ${problems.join("\n  ")}`, "fix the sweep file or its base config");
  }
  return { file: path.resolve(file), base, name: sweepName, dir, runs };
}

/** A fine-tune's config from its parent's (validated) config: as `sae finetune` makes it, then the group's overrides. */
export function finetuneRunConfig(parent: Config, parentDir: string, ft: Finetune, origin: string, groupSet: SweepOverride[], runsDir: string): { config: Config; warnings: string[] } {
  const raw = finetuneConfig(parent, parentDir, { ...ft, runsDir, names: { freeze: `${origin}: finetune.freeze`, mode: `${origin}: finetune.mode` } });
  return configFromObject(raw, groupSet.map(toOverride(process.cwd())), probeData);
}

function toOverride(baseDir: string): (o: SweepOverride) => Override {
  return (o) => ({ key: o.key, value: o.value, origin: o.origin, baseDir });
}

/** Nested override maps become dotted keys; each keeps the position of its innermost key. */
function flatten(obj: Record<string, unknown>, at0: (string | number)[], at: (p: (string | number)[]) => string, prefix: string[] = []): SweepOverride[] {
  const out: SweepOverride[] = [];
  for (const [k, v] of Object.entries(obj)) {
    const keyPath = [...prefix, ...k.split(".")];
    if (v !== null && typeof v === "object" && !Array.isArray(v)) out.push(...flatten(v as Record<string, unknown>, [...at0, k], at, keyPath));
    else out.push({ key: keyPath.join("."), value: v, origin: at([...at0, k]).replace(/: $/, "") });
  }
  return out;
}

/** The grid's combinations, first key varying slowest. */
function gridEntries(grid: Record<string, unknown[]>, gi: number, at: (p: (string | number)[]) => string): SweepOverride[][] {
  let combos: SweepOverride[][] = [[]];
  for (const [k, values] of Object.entries(grid)) {
    const next: SweepOverride[][] = [];
    for (const c of combos) values.forEach((v, vi) => next.push([...c, { key: k, value: v, origin: at(["groups", gi, "grid", k, vi]).replace(/: $/, "") }]));
    combos = next;
  }
  return combos;
}

/** short names of the sparsity knobs and sizes in run names */
const ABBREVIATIONS: Record<string, string> = { l1_coefficient: "l1_", l0_coefficient: "l0_", tanh_scale: "b", expansion_factor: "x", d_sae: "h", jumprelu_init_threshold: "theta", jumprelu_bandwidth: "eps" };

/** an override as part of a run name: sae.k 8 → "k8", sae.l1_coefficient 0.2 → "l1_0.2", sae.flavour april → "april" */
function namePart(o: SweepOverride): string {
  if (typeof o.value === "string") return slug(o.value);
  const last = o.key.split(".").pop()!;
  return `${ABBREVIATIONS[last] ?? (/\d$/.test(last) ? last + "_" : last)}${slug(o.value)}`;
}

/** a value as part of a run name: 0.2 → "0.2", true → "true", [encoder] → "encoder" */
function slug(v: unknown): string {
  const text = typeof v === "string" || typeof v === "number" || typeof v === "boolean" ? String(v) : Array.isArray(v) ? v.map(String).join("+") : JSON.stringify(v);
  return text.replace(/[^A-Za-z0-9_.-]+/g, "_");
}

function describe(issue: z.core.$ZodIssue, at: (p: (string | number)[]) => string): string {
  const p = issue.path.map((x) => (typeof x === "number" ? x : String(x)));
  const dotted = p.map((x) => (typeof x === "number" ? `[${x}]` : x)).join(".").replace(/\.\[/g, "[");
  if (issue.code === "unrecognized_keys") {
    const known = knownKeys(p);
    return issue.keys.map((k) => `${at([...p, k])}unknown key ${dotted ? dotted + "." : ""}${k}${suggest(k, known)} (known keys${dotted ? " under " + dotted : ""}: ${known.join(", ")})`).join("\n  ");
  }
  const input = (issue as { input?: unknown }).input;
  const expected = issue.message.replace(/^Invalid input: |^Invalid option: |^Too big: |^Too small: /, "").replace(/, received .*$/, "");
  const found = input === undefined ? "nothing" : typeof input === "string" ? `"${input}"` : Array.isArray(input) ? "a list" : typeof input === "object" && input !== null ? "a mapping" : String(input);
  return `${at(p)}${dotted || "(top level)"}: ${expected}, but found ${found}`;
}

/** the keys the sweep schema allows at a path */
function knownKeys(p: (string | number)[]): string[] {
  const names = p.filter((x) => typeof x === "string");
  if (names.length === 0) return Object.keys(SweepSchema.shape);
  if (names[names.length - 1] === "finetune") return Object.keys(FinetuneSchema.shape);
  return Object.keys(GroupSchema.shape);
}

/** A sweep file's runs, or the error that names a wrong index. */
export function runAt(sweep: Sweep, index: number): SweepRun {
  const r = sweep.runs[index];
  if (!r) throw new SaeError("usage", `--index ${index}: the sweep has runs 0..${sweep.runs.length - 1}`, "`sae sweep FILE --dry-run` lists them");
  return r;
}

/** sweep.json: what the sweep folder holds, written when a sweep starts (or a Slurm script is written). */
export function writeSweepJson(sweep: Sweep): string {
  const file = path.join(sweep.dir, "sweep.json");
  fs.mkdirSync(sweep.dir, { recursive: true });
  const doc = {
    format: "sae-sweep",
    version: 1,
    name: sweep.name,
    file: sweep.file,
    base: sweep.base,
    written: new Date().toISOString(),
    runs: sweep.runs.map((r) => ({
      index: r.index, name: r.name, group: r.group, stage: r.stage, variant: r.config.sae.variant,
      ...(r.finetune ? { finetunes: r.finetune.parent } : {}),
      varying: r.varying,
      overrides: Object.fromEntries(r.overrides.map((o) => [o.key, o.value])),
    })),
  };
  writeFileAtomic(file, JSON.stringify(doc, null, 2) + "\n");
  return file;
}
