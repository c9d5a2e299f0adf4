// `npm run bench -- --engine tfjs [--big] [--steps N]`: the TopK training step of the tfjs engine
// (TfjsStepper, AuxK on with 1% of latents dead) against one dense matMul of the encoder's shape
// (B×D by D×H) on the tfjs backend in use, and their ratio. The shape is B=4096 D=768 H=16384 K=32
// on a GPU (or with --big); on a CPU backend a small one, where the run only proves the bench works.
// Each timing ends by reading a scalar back, so queued device work is counted.
import { configFromObject } from "../src/config/load.ts";
import { loadTfjs } from "../src/engine/tfjs.ts";
import { createModel } from "../src/sae/index.ts";
import { ParamSet } from "../src/sae/params.ts";
import { TfjsStepper } from "../src/train/tfjs-stepper.ts";
import { Rng } from "../src/rng.ts";

const args = process.argv.slice(2);
const stepsArg = args.indexOf("--steps");
const steps = stepsArg >= 0 ? Number(args[stepsArg + 1]) : 3;
const { tf, reason, gpu, backend } = await loadTfjs();
const big = gpu || args.includes("--big");
const shape = big ? { B: 4096, D: 768, H: 16384, K: 32 } : backend === "cpu" ? { B: 256, D: 64, H: 1024, K: 8 } : { B: 1024, D: 128, H: 1024, K: 16 };
const { B, D, H, K } = shape;
console.log(`${reason}; B=${B} D=${D} H=${H} K=${K}${big ? "" : " (a small shape: on a CPU backend the bench only shows that it runs)"}; fastest of ${steps} after one warm-up`);

const rng = new Rng(1);
const X = Float32Array.from({ length: B * D }, () => rng.normal() / Math.sqrt(D));
const fastest = (f: () => void): number => {
  f();
  let best = Infinity;
  for (let i = 0; i < steps; i++) {
    const t0 = performance.now();
    f();
    best = Math.min(best, performance.now() - t0);
  }
  return best;
};

// the encoder's matMul: P = X W_encᵀ
const x = tf.tensor2d(X, [B, D]), W = tf.randomNormal([H, D]);
const gemmMs = fastest(() => tf.tidy(() => tf.sum(tf.matMul(x, W, false, true)).dataSync()));

const c = configFromObject({ data: { d_in: D }, sae: { variant: "topk", d_sae: H, k: K } }).config;
const model = createModel(c);
const p = new ParamSet(model.specs);
for (let i = 0; i < p.buf.length; i++) p.buf[i] = rng.normal() / Math.sqrt(D);
// 1% of the latents dead: AuxK runs
const sinceFired = Float64Array.from({ length: H }, (_, i) => (i % 100 === 0 ? c.train.dead_tokens_threshold : 0));
const phase = { model, frozen: new Set<string>(), beta1: 0.9, beta2: 0.999, eps: 1e-8, gradClip: 1, deadTokens: c.train.dead_tokens_threshold };
const stepper = new TfjsStepper(tf, c, phase, { p, m: p.like(), v: p.like(), sinceFired, step: 0, tokens: 0, adamT: 0, scale: 1, batchOffset: 0 });
let l0 = 0;
const stepMs = fastest(() => {
  stepper.step(X, B, 1e-6, 0);
  l0 = stepper.flush().l0;
});
stepper.dispose();
const gflops = (2 * B * D * H) / (gemmMs * 1e6);
console.log(`  topk step, AuxK on (1% dead)  ${stepMs.toFixed(1).padStart(9)} ms  ${(stepMs / gemmMs).toFixed(2).padStart(6)} × matMul (${gemmMs.toFixed(1)} ms, ${gflops.toFixed(1)} GFLOP/s)  L0 ${l0.toFixed(0)}`);
