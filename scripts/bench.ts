// `npm run bench [-- --json] [-- --small-only] [-- --steps N] [-- --precision fp32|bf16|auto] [-- --profile]`: milliseconds per training step of
// each case (the fastest of N steps after four warm-up steps), the GFLOP/s of the dense encoder GEMM (B×D by D×H) measured in the same process, the
// ratio step / encoder GEMM (the fastest of 3 GEMMs before the steps and one after each step; 1.0 is the floor for an exact step), peak resident memory against what
// the step needs (parameters + gradients + Adam moments + batch + workspace), and the issue-13
// target. Each case runs in a child process of its own so that its peak memory is its own; the
// process's resident memory before any array is allocated (node, tsx, the addon) is subtracted.
// Inputs are Gaussian with E‖x‖² = 1; sparse ReLU cases shift the encoder biases so that about
// 0.5% of latents fire; AuxK cases mark 1% or 5% of latents dead (k_aux = D/2).
// --profile adds, per case, the time of each engine kernel over one step (summed per kernel, from
// a timing wrapper around the Engine's functions) and the remainder: the step's time outside the
// kernels (host loops, fills and allocations in TypeScript). `--case N [--big]` runs one case.
// `--against DIR [--big] [--rounds N] [--case N]` compares this checkout with another, step by step in
// one process (see against() below).
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { selectEngine, type Engine } from "../src/engine/index.ts";
import { cpuInfo } from "../src/engine/cpu.ts";
import { bf16Engine, resolvePrecision, type PrecisionSetting } from "../src/engine/bf16.ts";
import { ParamSet } from "../src/sae/params.ts";
import { createStandard } from "../src/sae/standard/index.ts";
import { createTopK } from "../src/sae/topk/fast.ts";
import { createBatchTopK } from "../src/sae/batchtopk/fast.ts";
import { createGated } from "../src/sae/gated/fast.ts";
import { createJumpRelu } from "../src/sae/jumprelu/fast.ts";
import { createMatryoshka } from "../src/sae/matryoshka/fast.ts";
import { defaultPrefixes } from "../src/sae/matryoshka/index.ts";
import type { SaeModel } from "../src/sae/variant.ts";
import { optimizerStep } from "../src/train/step.ts";
import { Rng } from "../src/rng.ts";

interface Shape { B: number; D: number; H: number; K: number }
export const SMALL: Shape = { B: 1024, D: 128, H: 1024, K: 16 };
export const BIG: Shape = { B: 4096, D: 768, H: 16384, K: 32 };

const topk = (D: number, H: number, K: number) => createTopK({ D, H }, { k: K, kAux: Math.floor(D / 2), auxCoefficient: 1 / 32, applyBDecToInput: true });

interface Case { name: string; target?: number; build(s: Shape): { model: SaeModel; sparseBias?: boolean; deadFrac?: number } }
export const CASES: Case[] = [
  { name: "topk, AuxK on (1% dead)", target: 1.4, build: ({ D, H, K }) => ({ model: topk(D, H, K), deadFrac: 0.01 }) },
  { name: "topk, AuxK on (5% dead)", build: ({ D, H, K }) => ({ model: topk(D, H, K), deadFrac: 0.05 }) },
  { name: "topk, no dead latents", target: 1.3, build: ({ D, H, K }) => ({ model: topk(D, H, K) }) },
  { name: "batchtopk, AuxK on (1% dead)", target: 1.5, build: ({ D, H, K }) => ({ model: createBatchTopK({ D, H }, { k: K, kAux: Math.floor(D / 2), auxCoefficient: 1 / 32, applyBDecToInput: true }), deadFrac: 0.01 }) },
  { name: "matryoshka, 5 prefixes, AuxK (1% dead)", build: ({ D, H, K }) => ({ model: createMatryoshka({ D, H }, { k: K, kAux: Math.floor(D / 2), auxCoefficient: 1 / 32, applyBDecToInput: true, prefixes: defaultPrefixes(H) }), deadFrac: 0.01 }) },
  { name: "standard constrained, L0 ≈ 0.5% of H", target: 1.7, build: ({ D, H }) => ({ model: createStandard({ D, H }, { flavour: "constrained", applyBDecToInput: true }), sparseBias: true }) },
  { name: "standard april, L0 ≈ 0.5% of H", target: 1.7, build: ({ D, H }) => ({ model: createStandard({ D, H }, { flavour: "april", applyBDecToInput: true }), sparseBias: true }) },
  { name: "standard constrained, dense (L0 ≈ H/2)", target: 5.3, build: ({ D, H }) => ({ model: createStandard({ D, H }, { flavour: "constrained", applyBDecToInput: true }) }) },
  { name: "gated, L0 ≈ 0.5% of H", target: 2.0, build: ({ D, H }) => ({ model: createGated({ D, H }, { flavour: "paper", applyBDecToInput: true }), sparseBias: true }) },
  { name: "jumprelu, L0 ≈ 0.5% of H", target: 1.7, build: ({ D, H }) => ({ model: createJumpRelu({ D, H }, { bandwidth: 0.001, unitNormDecoder: true, applyBDecToInput: false }), sparseBias: true }) },
];

function gaussian(n: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = rng.normal();
  return a;
}

function peakRssBytes(): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync("/proc/self/status", "utf8"));
  return m ? Number(m[1]) * 1024 : NaN;
}

/** one step's time by kernel: calls and milliseconds summed per Engine function, and what is left */
interface Profile { step_ms: number; kernel_ms: number; remainder_ms: number; kernels: Record<string, { calls: number; ms: number }> }
interface Row { precision: string; bf16_gemm_ms: number | null; cast_ms: number | null; shape: string; case: string; ms_per_step: number; gemm_ms: number; gemm_gflops: number; ratio: number; target: number | null; ok: boolean | null; l0: number; peak_rss_mib: number; needed_mib: number; memory_ratio: number; profile?: Profile }

/** e with every function timed into `into` (reset by the caller before each step) */
function timedEngine(e: Engine, into: () => Profile["kernels"]): Engine {
  const out: Record<string, unknown> = { name: e.name };
  for (const [name, fn] of Object.entries(e)) {
    if (typeof fn !== "function") continue;
    out[name] = (...a: unknown[]) => {
      const t0 = performance.now();
      const r = fn(...a);
      // GEMMs by shape M×N×K: the encoder's stands apart from the smaller ones
      const key = name === "gemm" ? `gemm ${a[2]}×${a[3]}×${a[4]}` : name;
      const k = (into()[key] ??= { calls: 0, ms: 0 });
      k.calls++;
      k.ms += performance.now() - t0;
      return r;
    };
  }
  return out as unknown as Engine;
}

/** the machine and build the numbers belong to */
function machineLine(): string {
  const { info } = selectEngine();
  const cpu = cpuInfo();
  const model = cpu.family !== null ? `${cpu.model} (family ${cpu.family} model ${cpu.modelNumber})` : cpu.model;
  return `cpu: ${model}; addon built for ${info?.simd ?? "(no addon)"}; OpenBLAS ${info?.blasCore ?? "-"} kernels`;
}

function profileTable(row: Row): string {
  const p = row.profile!;
  const pct = (ms: number) => `${((100 * ms) / p.step_ms).toFixed(1).padStart(5)}%`;
  const line = (name: string, calls: string, ms: number) => `    ${name.padEnd(24)} ${calls.padStart(5)} ${ms.toFixed(1).padStart(9)} ms ${pct(ms)} ${(ms / row.gemm_ms).toFixed(2).padStart(6)} × GEMM`;
  const lines = [`  ${row.case} (${row.shape}): profiled step ${p.step_ms.toFixed(1)} ms`, `    ${"kernel".padEnd(24)} ${"calls".padStart(5)} ${"time".padStart(12)} ${"share".padStart(6)}`];
  for (const [name, k] of Object.entries(p.kernels).sort((a, b) => b[1].ms - a[1].ms)) lines.push(line(name, String(k.calls), k.ms));
  lines.push(line("(kernels)", "", p.kernel_ms), line("(remainder: JS)", "", p.remainder_ms));
  return lines.join("\n");
}

/**
 * One case set up in this process, as runCase times it: `step()` runs one optimisation step,
 * `timeGemm()` one encoder GEMM (ms). Exported, with CASES, for `--against` (below), which sets up
 * the cases of two checkouts in one process.
 */
export function prepareCase(c: Case, shape: Shape, want: PrecisionSetting) {
  const { B, D, H } = shape;
  const choice = selectEngine();
  const e = choice.engine;
  const prec = resolvePrecision(want, choice, e.name);
  const X = gaussian(B * D, 1);
  for (let i = 0; i < X.length; i++) X[i] /= Math.sqrt(D);
  // encoder GEMM, same process (its arrays are subtracted from the peak memory below)
  const W = gaussian(H * D, 2), P = new Float32Array(B * H);
  e.gemm(false, true, B, H, D, 1, X, W, 0, P); // warm-up
  // The machine is shared: take the fastest of several repetitions, for the GEMM and the steps alike.
  const timeGemm = () => {
    const t0 = performance.now();
    e.gemm(false, true, B, H, D, 1, X, W, 0, P);
    return performance.now() - t0;
  };
  let gemmMs = Math.min(timeGemm(), timeGemm(), timeGemm());

  const { model, sparseBias, deadFrac = 0 } = c.build(shape);
  const s = { p: new ParamSet(model.specs), m: new ParamSet(model.specs), v: new ParamSet(model.specs), adamT: 0 };
  const Wdec = s.p.get("W_dec");
  Wdec.set(W);
  e.normalizeRows(Wdec, H, D);
  s.p.get("W_enc").set(Wdec);
  if (sparseBias) {
    // pre-activations ~ N(0, 1/D): a bias of −2.58/√D leaves about 0.5% of them positive
    const shift = -2.58 / Math.sqrt(D);
    if (s.p.views.log_threshold) s.p.get("log_threshold").fill(Math.log(2.58 / Math.sqrt(D))); // JumpReLU: the threshold does it
    else for (const name of ["b_enc", "b_gate"]) if (s.p.views[name]) s.p.get(name).fill(shift);
  }
  // bf16: the step's GEMMs in bf16 (the ratio stays against the fp32 GEMM above); the bf16 encoder GEMM alone for reference
  const se = prec.kernels ? bf16Engine(e, prec.kernels, Object.values(s.p.views) as Float32Array[]) : null;
  let bf16Gemm: number | null = null;
  if (se) {
    se.gemm(false, true, B, H, D, 1, X, s.p.get("W_enc"), 0, P); // creates the primitive
    const timeBf16 = () => {
      const t0 = performance.now();
      se.gemm(false, true, B, H, D, 1, X, s.p.get("W_enc"), 0, P);
      return performance.now() - t0;
    };
    bf16Gemm = Math.min(timeBf16(), timeBf16(), timeBf16());
  }
  const grads = s.p.like();
  const dead = new Uint8Array(H).map((_, i) => (i % Math.round(1 / Math.max(deadFrac, 1e-9)) === 0 && deadFrac > 0 ? 1 : 0));
  const settings = { lr: 1e-6, beta1: 0.9, beta2: 0.999, eps: 1e-8, gradClip: 1, coeff: 0.01, dead: deadFrac > 0 ? dead : null };
  const step = (eng: Engine = se ?? e) => {
    se?.newStep();
    return optimizerStep(eng, model, s, grads, X, B, settings);
  };
  return { e, se, prec, X, W, P, model, s, step, timeGemm, gemmMs, bf16Gemm };
}

/**
 * Steps run before any is timed: the first allocates the workspace, and the variants' TypeScript
 * loops reach their optimised code only over the first few (Gated's per-entry loop took 16–27 ms
 * in its first steps, 4–7 ms from the fifth on; a training run spends all but a handful of its
 * steps there).
 */
const WARMUP_STEPS = 4;

/** a bad flag or folder: said in one line, exit 2 */
function usage(msg: string): never {
  console.error(`error: ${msg}`);
  process.exit(2);
}

/**
 * A prepared case's step through the timing wrapper: its time, its kernels' times, and its time
 * outside the GEMMs of the encoder's shape ([rows, D] × [D, H], the dense decoder gradient's too):
 * the part a change to the rest of the step moves, which the GEMM's noise on a shared machine would
 * swamp in the step's time.
 */
function timedStep(c: { e: Engine; se: Engine | null; step: (eng?: Engine) => unknown }, shape: Shape): () => { ms: number; rest: number; kernels: Profile["kernels"] } {
  let kernels: Profile["kernels"] = {};
  const te = timedEngine(c.se ?? c.e, () => kernels);
  const encoderShaped = (key: string) => key.startsWith("gemm ") && key.endsWith(`×${shape.H}×${shape.D}`);
  return () => {
    kernels = {};
    const t0 = performance.now();
    c.step(te);
    const ms = performance.now() - t0;
    const gemm = Object.entries(kernels).reduce((s, [k, v]) => s + (encoderShaped(k) ? v.ms : 0), 0);
    return { ms, rest: ms - gemm, kernels };
  };
}

/** one case, in this process */
function runCase(c: Case, shape: Shape, steps: number, want: PrecisionSetting, profile: boolean): Row {
  const { B, D, H } = shape;
  const baseline = process.memoryUsage().rss; // node + tsx + the addon, before any array
  const prepared = prepareCase(c, shape, want);
  const { se, prec, X, W, P, model, s, step, timeGemm, bf16Gemm } = prepared;
  let gemmMs = prepared.gemmMs;
  for (let i = 0; i < WARMUP_STEPS; i++) step(); // allocates the workspace; the JIT's tiers
  let l0 = 0, ms = Infinity, castMs = Infinity;
  for (let i = 0; i < steps; i++) {
    se?.takeCastMs();
    const t1 = performance.now();
    const { fwd } = step();
    const t = performance.now() - t1;
    if (t < ms) [ms, castMs] = [t, se?.takeCastMs() ?? NaN];
    // a GEMM after every step, so that the fastest GEMM and the fastest step are drawn from the same
    // minutes of a machine whose load comes and goes
    gemmMs = Math.min(gemmMs, timeGemm());
    if (i === 0) {
      const code = fwd.code;
      let n = 0;
      if (code.kind === "dense") for (let j = 0; j < code.F.length; j++) n += code.F[j] > 0 ? 1 : 0;
      else for (let j = 0; j < code.val.length; j++) n += code.val[j] > 0 ? 1 : 0;
      l0 = n / B;
    }
  }
  let prof: Profile | undefined;
  if (profile) {
    // separate steps through the timing wrapper (its cost, ~1 µs a call, stays out of ms_per_step);
    // the fastest one is reported
    const timed = timedStep(prepared, shape);
    for (let i = 0; i < Math.max(1, steps); i++) {
      const { ms: stepMs, kernels } = timed();
      if (prof && prof.step_ms <= stepMs) continue;
      const kernelMs = Object.values(kernels).reduce((a, k) => a + k.ms, 0);
      prof = { step_ms: stepMs, kernel_ms: kernelMs, remainder_ms: stepMs - kernelMs, kernels };
    }
  }
  gemmMs = Math.min(gemmMs, timeGemm()); // once more after the profile
  const needed = 4 * s.p.buf.byteLength + X.byteLength + model.workspaceBytes() + (se?.bf16Bytes() ?? 0);
  const peak = peakRssBytes() - baseline - W.byteLength - P.byteLength; // the GEMM probe's arrays are not the step's
  const ratio = ms / gemmMs;
  // the targets (issue 13) are set at the big shape; at the small one fixed per-call costs dominate
  const target = shape === BIG ? c.target ?? null : null;
  return {
    precision: prec.precision, bf16_gemm_ms: bf16Gemm, cast_ms: se ? castMs : null,
    shape: `B=${B} D=${D} H=${H} K=${shape.K}`, case: c.name, ms_per_step: ms, gemm_ms: gemmMs, gemm_gflops: (2 * B * D * H) / (gemmMs * 1e6), ratio,
    target, ok: target !== null ? ratio <= target : null, l0, peak_rss_mib: peak / 2 ** 20, needed_mib: needed / 2 ** 20, memory_ratio: peak / needed,
    ...(prof ? { profile: prof } : {}),
  };
}

/**
 * `--against DIR`: this checkout's cases against those of the checkout DIR (its own `npm ci`; a
 * version of this bench with prepareCase), both set up in this one process and their steps
 * alternated (this, DIR, DIR, this, ...), so that a busy machine slows both alike. Prints, per case
 * both have, the fastest and median step of each and after/before: the median of the per-round
 * ratios and the ratio of the fastest steps. What "no slower" claims are measured with.
 */
async function against(dir: string, shape: Shape, rounds: number, want: PrecisionSetting, only: number | null): Promise<void> {
  const file = path.resolve(dir, "scripts/bench.ts");
  if (!fs.existsSync(file)) usage(`--against ${dir}: no scripts/bench.ts there; give the folder of another sae checkout (e.g. \`git worktree add ../before REV && (cd ../before && npm ci)\`)`);
  // this checkout against itself (an A/A run: how far apart two identical builds measure here) uses
  // its own exports; importing this module from inside its own top-level await would never settle
  const self = file === fileURLToPath(import.meta.url);
  const other = (self ? { CASES, prepareCase } : await import(pathToFileURL(file).href)) as { CASES?: Case[]; prepareCase?: typeof prepareCase };
  const { CASES: theirCases, prepareCase: theirPrepare } = other;
  if (!theirPrepare || !theirCases) return usage(`--against ${dir}: its scripts/bench.ts has no prepareCase (it predates --against); compare against a checkout that has it`);
  const med = (a: number[]) => [...a].sort((x, y) => x - y)[(a.length - 1) >> 1];
  console.log(`${machineLine()}
after = ${path.resolve(".")}, before = ${path.resolve(dir)}; ${rounds} rounds of one step each, alternated, per case`);
  for (const [i, c] of CASES.entries()) {
    if (only !== null && i !== only) continue;
    const theirs = theirCases.find((o) => o.name === c.name);
    if (!theirs) {
      console.log(`  ${c.name}: not in ${dir}`);
      continue;
    }
    const before = timedStep(theirPrepare(theirs, shape, want), shape), after = timedStep(prepareCase(c, shape, want), shape);
    for (let i = 0; i < WARMUP_STEPS; i++) before(), after();
    const tb: number[] = [], ta: number[] = [], r: number[] = [], restB: number[] = [], restA: number[] = [], rr: number[] = [];
    for (let k = 0; k < rounds; k++) {
      let a: { ms: number; rest: number }, b: { ms: number; rest: number };
      if (k % 2) {
        a = after();
        b = before();
      } else {
        b = before();
        a = after();
      }
      tb.push(b.ms);
      ta.push(a.ms);
      r.push(a.ms / b.ms);
      restB.push(b.rest);
      restA.push(a.rest);
      rr.push(a.rest / b.rest);
    }
    const row = { case: c.name, before_min: Math.min(...tb), before_median: med(tb), after_min: Math.min(...ta), after_median: med(ta), ratio_median: med(r), ratio_of_minima: Math.min(...ta) / Math.min(...tb), rest_before_median: med(restB), rest_after_median: med(restA), rest_ratio_median: med(rr) };
    console.log(`  ${c.name.padEnd(40)} before ${row.before_min.toFixed(1)} / ${row.before_median.toFixed(1)} ms, after ${row.after_min.toFixed(1)} / ${row.after_median.toFixed(1)} ms (fastest / median): after ÷ before ${row.ratio_median.toFixed(3)} (median of rounds), ${row.ratio_of_minima.toFixed(3)} (fastest)`);
    console.log(`  ${"".padEnd(40)} outside the encoder-shaped GEMMs: before ${row.rest_before_median.toFixed(1)} ms, after ${row.rest_after_median.toFixed(1)} ms (medians): after ÷ before ${row.rest_ratio_median.toFixed(3)} (median of rounds)`);
    console.log(JSON.stringify(row));
  }
}

const HELP = `npm run bench [-- OPTIONS]: ms per training step of every case, its ratio to the encoder GEMM
of the same process, peak memory against what the step needs (docs/engine.md, README: Engine and performance)
  --json                 one JSON document instead of the table
  --small-only           only B=1024 D=128 H=1024 K=16
  --steps N              the fastest of N steps per case (default 3, after 4 warm-up steps)
  --precision P          fp32 (default), bf16 or auto; ratios stay against the fp32 GEMM
  --profile              per case, each kernel's time over one step and the remainder
  --case N [--big]       one case (0-based, in the table's order), its row as JSON
  --against DIR [--big] [--rounds N] [--case N] [--precision P]
                         this checkout against another one, steps alternated in one process
  --engine tfjs          the tfjs engine's bench`;
const KNOWN = new Set(["--json", "--small-only", "--steps", "--precision", "--profile", "--case", "--big", "--against", "--rounds", "--engine", "--help", "-h"]);

// a script only when run, not when another checkout's bench imports this one (--against)
const isMain = process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url);
const args = isMain ? process.argv.slice(2) : [];
const unknown = args.find((a) => a.startsWith("-") && !KNOWN.has(a));
if (unknown) usage(`unknown option ${unknown}; \`npm run bench -- --help\` lists them`);
if (!isMain) {
  // imported: CASES and prepareCase only
} else if (args.includes("--help") || args.includes("-h")) {
  console.log(HELP);
} else if (args[args.indexOf("--engine") + 1] === "tfjs" && args.includes("--engine")) await import("./bench-tfjs.ts"); // the tfjs engine's bench
else if (args.includes("--against")) {
  const at = (flag: string) => (args.includes(flag) ? args[args.indexOf(flag) + 1] : undefined);
  await against(at("--against")!, args.includes("--big") ? BIG : SMALL, Number(at("--rounds") ?? 8), (at("--precision") ?? "fp32") as PrecisionSetting, at("--case") !== undefined ? Number(at("--case")) : null);
} else {
const stepsArg = args.indexOf("--steps");
const steps = stepsArg >= 0 ? Number(args[stepsArg + 1]) : 3;
const precArg = args.indexOf("--precision");
const precision = (precArg >= 0 ? args[precArg + 1] : "fp32") as PrecisionSetting;
if (!["fp32", "bf16", "auto"].includes(precision)) usage(`--precision ${precision}: expected fp32, bf16 or auto`);
const caseArg = args.indexOf("--case");
const profile = args.includes("--profile");
if (caseArg >= 0) {
  // child mode: one case, print its row as JSON (the last line; with --profile its table first)
  const shape = args.includes("--big") ? BIG : SMALL;
  const row = runCase(CASES[Number(args[caseArg + 1])], shape, steps, precision, profile);
  if (profile && !args.includes("--json")) console.log(`${machineLine()}\n${profileTable(row)}`);
  console.log(JSON.stringify(row));
} else {
  const json = args.includes("--json");
  const shapes = args.includes("--small-only") ? ["small"] : ["small", "big"];
  const engine = selectEngine();
  const prec = resolvePrecision(precision, engine, engine.engine.name);
  if (!json) console.log(`${engine.reason}; precision ${prec.reason}; fastest of ${steps} steps per case after ${WARMUP_STEPS} warm-up steps; each case in its own process${prec.kernels ? "; ratios against the fp32 encoder GEMM" : ""}\n${machineLine()}`);
  const rows: Row[] = [];
  const self = fileURLToPath(import.meta.url);
  for (const shape of shapes) {
    if (!json) console.log(`\n${shape === "big" ? "B=4096 D=768 H=16384 K=32" : "B=1024 D=128 H=1024 K=16 (no targets: at this size fixed per-call costs dominate)"}`);
    for (let i = 0; i < CASES.length; i++) {
      const r = spawnSync(process.execPath, ["--import", "tsx", self, "--case", String(i), "--steps", String(steps), "--precision", precision, "--json", ...(profile ? ["--profile"] : []), ...(shape === "big" ? ["--big"] : [])], { encoding: "utf8", maxBuffer: 1 << 20 });
      if (r.status !== 0) throw new Error(`bench case ${CASES[i].name} failed:\n${r.stderr}`);
      const row = JSON.parse(r.stdout.trim().split("\n").pop()!) as Row;
      rows.push(row);
      if (!json) {
        const target = row.target === null ? "" : `target ≤ ${row.target.toFixed(1)} ${row.ok ? "met" : "MISSED"}`;
        console.log(`  ${row.case.padEnd(40)} ${row.ms_per_step.toFixed(1).padStart(8)} ms  ${row.ratio.toFixed(2).padStart(5)} × GEMM (${row.gemm_ms.toFixed(0)} ms, ${row.gemm_gflops.toFixed(0)} GFLOP/s)  ${row.bf16_gemm_ms !== null ? `bf16 GEMM ${row.bf16_gemm_ms.toFixed(0)} ms, casts ${row.cast_ms!.toFixed(1)} ms  ` : ""}L0 ${row.l0.toFixed(0).padStart(5)}  peak ${row.peak_rss_mib.toFixed(0)} MiB = ${row.memory_ratio.toFixed(2)} × needed  ${target}`);
        if (row.profile) console.log(profileTable(row));
      }
    }
  }
  if (json) console.log(JSON.stringify({ engine: engine.reason, precision: prec.reason, machine: machineLine(), steps, rows }, null, 2));
}
}
