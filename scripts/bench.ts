// `npm run bench [-- --json] [-- --steps N] [-- --small-only]`: milliseconds per training step of
// each variant, the GFLOP/s of the dense encoder GEMM (B×D by D×H) measured in the same process,
// and the ratio step time / encoder-GEMM time (the floor for an exact step is 1.0).
// Inputs are Gaussian; "dense" cases are at init, where about half the ReLU latents are active.
import fs from "node:fs";
import { selectEngine } from "../src/engine/index.ts";
import type { Engine } from "../src/engine/types.ts";
import { ParamSet } from "../src/sae/params.ts";
import { createStandard } from "../src/sae/standard.ts";
import { createTopK } from "../src/sae/topk.ts";
import type { SaeModel } from "../src/sae/variant.ts";
import { optimizerStep } from "../src/train/step.ts";
import { Rng } from "../src/train/rng.ts";

const args = process.argv.slice(2);
const json = args.includes("--json");
const steps = Number(args[args.indexOf("--steps") + 1]) || 3;
const shapes = args.includes("--small-only") ? [{ B: 1024, D: 128, H: 1024, K: 16 }] : [{ B: 1024, D: 128, H: 1024, K: 16 }, { B: 4096, D: 768, H: 16384, K: 32 }];

const choice = selectEngine();
const e = choice.engine;
const log = (s: string) => { if (!json) console.log(s); };
log(`${choice.reason}; ${steps} timed steps per case after one warm-up step`);

function gaussian(n: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = rng.normal();
  return a;
}

function peakRssMiB(): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync("/proc/self/status", "utf8"));
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

function timeGemm(e: Engine, B: number, D: number, H: number, X: Float32Array): number {
  const W = gaussian(H * D, 2), P = new Float32Array(B * H);
  e.gemm(false, true, B, H, D, 1, X, W, 0, P); // warm-up
  const t0 = performance.now();
  const reps = 3;
  for (let r = 0; r < reps; r++) e.gemm(false, true, B, H, D, 1, X, W, 0, P);
  return (performance.now() - t0) / reps;
}

interface Row { shape: string; case: string; ms_per_step: number; gemm_ms: number; gemm_gflops: number; ratio: number; l0: number; peak_rss_mib: number }
const rows: Row[] = [];

for (const { B, D, H, K } of shapes) {
  const shape = `B=${B} D=${D} H=${H} K=${K}`;
  const X = gaussian(B * D, 1);
  for (let i = 0; i < X.length; i++) X[i] /= Math.sqrt(D); // E‖x‖² = 1
  const gemmMs = timeGemm(e, B, D, H, X);
  const gflops = (2 * B * D * H) / (gemmMs * 1e6);
  log(`\n${shape}: encoder GEMM ${gemmMs.toFixed(1)} ms = ${gflops.toFixed(1)} GFLOP/s`);
  const cases: [string, SaeModel, number][] = [
    ["topk (AuxK on, 25% dead)", createTopK({ D, H }, { k: K, kAux: Math.floor(D / 2), auxCoefficient: 1 / 32, applyBDecToInput: true }), 0.25],
    ["standard constrained (dense code)", createStandard({ D, H }, { flavour: "constrained", applyBDecToInput: true }), 0],
    ["standard april (dense code)", createStandard({ D, H }, { flavour: "april", applyBDecToInput: true }), 0],
  ];
  for (const [name, model, deadFrac] of cases) {
    const s = { p: new ParamSet(model.specs), m: new ParamSet(model.specs), v: new ParamSet(model.specs), adamT: 0 };
    const Wdec = s.p.get("W_dec");
    Wdec.set(gaussian(H * D, 3));
    e.normalizeRows(Wdec, H, D);
    s.p.get("W_enc").set(Wdec);
    const grads = s.p.like();
    const dead = new Uint8Array(H).map((_, i) => (i < deadFrac * H ? 1 : 0));
    const settings = { lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, gradClip: 1, coeff: 0.01, dead: deadFrac > 0 ? dead : null };
    optimizerStep(e, model, s, grads, X, B, settings);
    let l0 = 0;
    const t0 = performance.now();
    for (let i = 0; i < steps; i++) {
      const { fwd } = optimizerStep(e, model, s, grads, X, B, settings);
      if (i === 0) {
        const c = fwd.code;
        let n = 0;
        if (c.kind === "dense") for (let j = 0; j < c.F.length; j++) n += c.F[j] > 0 ? 1 : 0;
        else for (let j = 0; j < c.val.length; j++) n += c.val[j] > 0 ? 1 : 0;
        l0 = n / B;
      }
    }
    const ms = (performance.now() - t0) / steps;
    const row = { shape, case: name, ms_per_step: ms, gemm_ms: gemmMs, gemm_gflops: gflops, ratio: ms / gemmMs, l0, peak_rss_mib: peakRssMiB() };
    rows.push(row);
    log(`  ${name.padEnd(36)} ${ms.toFixed(1).padStart(9)} ms/step  ${row.ratio.toFixed(2).padStart(6)} × GEMM  (L0 ${l0.toFixed(0)}, peak RSS so far ${row.peak_rss_mib.toFixed(0)} MiB)`);
  }
}
if (json) console.log(JSON.stringify({ engine: choice.reason, steps, rows }, null, 2));
