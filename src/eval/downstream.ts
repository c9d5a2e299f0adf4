// Downstream loss (sae-variants.md §4): the SAE's reconstruction replaces the activation at its
// layer and site inside the language model's forward pass, and the next-token predictions are
// compared with the clean model's on held-out sequences. Passes: clean, SAE spliced, zero
// ablation, mean ablation (the mean activation over the same held-out tokens).
//   ce_*                 mean next-token cross-entropy (nats)
//   ce_loss_recovered    (CE_zero − CE_sae) / (CE_zero − CE_clean); *_mean_ablation: the same with CE_mean
//   delta_loss           CE_sae − CE_clean
//   kl_*                 mean over tokens of KL(p_clean ‖ p_patched), summed over the vocabulary
//   kl_score             (KL_zero − KL_sae) / KL_zero
// Positions before `skip` (BOS, which the SAE did not train on) are neither patched nor scored,
// as SAEBench and SAELens's exclude_special_tokens do: scored are the predictions made at
// positions skip .. P−2 (of tokens skip+1 .. P−1).
import type { Engine } from "../engine/types.ts";
import type { Config } from "../config/schema.ts";
import type { DataSource } from "../data/source.ts";
import { harvestGroup } from "../lm/harvest.ts";
import { BOS, loadLlama, type LlamaModel as Lm } from "../lm/llama.ts";
import { SaeError } from "../errors.ts";
import { recordedSource } from "../data/store.ts";
import type { ParamSet } from "../sae/params.ts";
import type { SaeModel } from "../sae/variant.ts";
import { LlamaBatch, SITES, type LlamaModel, type Site } from "../lm/llama.ts";

export interface DownstreamOptions {
  /** a llama2.c checkpoint; default: the one the run's data came from */
  checkpoint?: string;
  layer?: number;
  site?: Site;
  /** held-out sequences to score */
  sequences: number;
}

/**
 * Where the SAE goes in which model, and on which sequences: from the options, else from the run's
 * data (data.model, or the source recorded in a harvested folder's manifest). Returns null when
 * nothing names a model (plain activation files) and no checkpoint was given.
 */
export function planDownstream(c: Config, data: DataSource, e: Engine, opt: DownstreamOptions): Omit<DownstreamInput, "sae" | "params"> | null {
  const recorded = c.data.source === "model" ? c.data.model! : c.data.source === "file" ? recordedSource(c.data.file!.path) : null;
  const checkpoint = opt.checkpoint ?? recorded?.checkpoint;
  if (!checkpoint) return null;
  const layer = opt.layer ?? recorded?.layer, site = (opt.site ?? recorded?.site) as Site | undefined;
  if (site !== undefined && !(SITES as readonly string[]).includes(site)) throw new SaeError("data", `the run's data records site "${site}", which is not one of ${SITES.join(", ")}`, "pass --site");
  if (layer === undefined || site === undefined) {
    throw new SaeError("usage", `the run's data does not say which layer and site of ${checkpoint} it came from`, "pass --layer N and --site resid_pre|attn_out|mlp_out|resid_post");
  }
  const lm: Lm = loadLlama(checkpoint);
  if (layer >= lm.config.layers) throw new SaeError("usage", `layer ${layer} does not exist in ${checkpoint} (layers 0..${lm.config.layers - 1})`);
  if (lm.config.dim !== c.data.d_in) throw new SaeError("usage", `${checkpoint} has width ${lm.config.dim}, the SAE takes D = ${c.data.d_in}`, "give the model the SAE was trained on");
  let seqs = data.evalSequences?.(opt.sequences) ?? null;
  if (!seqs) {
    // no held-out token ids: the model writes fresh sequences (a stream training never used)
    const P = Math.min(lm.config.seqLen, c.data.model?.context_size ?? lm.config.seqLen);
    const spec = { model: lm, engine: e, layer, site, P, seed: c.seed + 7919, temperature: 1, tokens: null };
    const ids = new Int32Array(opt.sequences * P);
    for (let g = 0; g * SEQ_GROUP < opt.sequences; g++) {
      const t = harvestGroup(spec, g).tokens;
      ids.set(t.subarray(0, Math.min(SEQ_GROUP, opt.sequences - g * SEQ_GROUP) * P), g * SEQ_GROUP * P);
    }
    seqs = { ids, count: opt.sequences, P };
  }
  let bosFirst = true;
  for (let s = 0; s < seqs.count; s++) if (seqs.ids[s * seqs.P] !== BOS) bosFirst = false;
  const skip = c.data.skip_positions ?? (bosFirst ? 1 : 0);
  return { e, lm, layer, site, skip, seqs };
}
import type { EvalSequences } from "../data/source.ts";
import { SEQ_GROUP } from "../data/stream.ts";

export interface DownstreamResult {
  model: string;
  layer: number;
  site: Site;
  sequences: number;
  /** scored predictions */
  tokens: number;
  ce_clean: number;
  ce_sae: number;
  ce_zero_ablation: number;
  ce_mean_ablation: number;
  ce_loss_recovered: number;
  ce_loss_recovered_mean_ablation: number;
  delta_loss: number;
  kl_sae: number;
  kl_zero_ablation: number;
  kl_mean_ablation: number;
  kl_score: number;
}

export interface DownstreamInput {
  e: Engine;
  lm: LlamaModel;
  layer: number;
  site: Site;
  skip: number;
  seqs: EvalSequences;
  /** the SAE in raw activation units (final/ weights) */
  sae: SaeModel;
  params: ParamSet;
}

type Patch = "clean" | "sae" | "zero" | "mean";

export function downstreamEval(o: DownstreamInput): DownstreamResult {
  const { lm, seqs } = o;
  const mean = meanActivation(o);
  const sums = { ce: { clean: 0, sae: 0, zero: 0, mean: 0 }, kl: { clean: 0, sae: 0, zero: 0, mean: 0 } };
  let scored = 0;
  for (let first = 0; first < seqs.count; first += SEQ_GROUP) {
    const S = Math.min(SEQ_GROUP, seqs.count - first);
    const clean = run(o, first, S, "clean", mean);
    scored += S * Math.max(0, seqs.P - 1 - o.skip);
    for (const patch of ["clean", "sae", "zero", "mean"] as const) {
      const lp = patch === "clean" ? clean : run(o, first, S, patch, mean);
      const { ce, kl } = compare(clean, lp, seqs, first, S, lm.config.vocab, o.skip);
      sums.ce[patch] += ce;
      sums.kl[patch] += kl;
    }
  }
  const ce = (p: Patch) => sums.ce[p] / scored, kl = (p: Patch) => sums.kl[p] / scored;
  return {
    model: lm.file, layer: o.layer, site: o.site, sequences: seqs.count, tokens: scored,
    ce_clean: ce("clean"), ce_sae: ce("sae"), ce_zero_ablation: ce("zero"), ce_mean_ablation: ce("mean"),
    ce_loss_recovered: (ce("zero") - ce("sae")) / (ce("zero") - ce("clean")),
    ce_loss_recovered_mean_ablation: (ce("mean") - ce("sae")) / (ce("mean") - ce("clean")),
    delta_loss: ce("sae") - ce("clean"),
    kl_sae: kl("sae"), kl_zero_ablation: kl("zero"), kl_mean_ablation: kl("mean"),
    kl_score: (kl("zero") - kl("sae")) / kl("zero"),
  };
}

/** the site's mean activation over the scored positions of all held-out sequences */
function meanActivation(o: DownstreamInput): Float32Array {
  const dim = o.lm.config.dim, acc = new Float64Array(dim);
  let n = 0;
  for (let first = 0; first < o.seqs.count; first += SEQ_GROUP) {
    const S = Math.min(SEQ_GROUP, o.seqs.count - first);
    forward(o, first, S, {
      layer: o.layer, site: o.site,
      fn: (act, pos) => {
        if (pos < o.skip) return;
        for (let s = 0; s < S; s++) for (let d = 0; d < dim; d++) acc[d] += act[s * dim + d];
        n += S;
      },
    });
  }
  return Float32Array.from(acc, (v) => v / Math.max(1, n));
}

/** log-probabilities [S, P, V] of one pass */
function run(o: DownstreamInput, first: number, S: number, patch: Patch, mean: Float32Array): Float64Array {
  const dim = o.lm.config.dim;
  const fn = (act: Float32Array, pos: number) => {
    if (pos < o.skip || patch === "clean") return;
    if (patch === "zero") act.fill(0);
    else if (patch === "mean") for (let s = 0; s < S; s++) act.set(mean, s * dim);
    else {
      const { Xhat } = o.sae.forward({ e: o.e, p: o.params, X: act, B: S, coeff: 0, dead: null });
      act.set(Xhat);
    }
  };
  return forward(o, first, S, { layer: o.layer, site: o.site, fn, writes: patch !== "clean" });
}

function forward(o: DownstreamInput, first: number, S: number, hook: { layer: number; site: Site; fn: (a: Float32Array, pos: number) => void; writes?: boolean }): Float64Array {
  const { P, ids } = o.seqs;
  const V = o.lm.config.vocab;
  const batch = new LlamaBatch(o.lm, o.e, S, P, [hook]);
  const out = new Float64Array(S * P * V);
  const cur = new Int32Array(S);
  for (let pos = 0; pos < P - 1; pos++) {
    for (let s = 0; s < S; s++) cur[s] = ids[(first + s) * P + pos];
    const logits = batch.step(cur, pos);
    for (let s = 0; s < S; s++) logSoftmax(logits, s * V, V, out, (s * P + pos) * V);
  }
  return out;
}

function logSoftmax(x: Float64Array, xo: number, V: number, out: Float64Array, oo: number): void {
  let max = -Infinity;
  for (let i = 0; i < V; i++) if (x[xo + i] > max) max = x[xo + i];
  let sum = 0;
  for (let i = 0; i < V; i++) sum += Math.exp(x[xo + i] - max);
  const lse = max + Math.log(sum);
  for (let i = 0; i < V; i++) out[oo + i] = x[xo + i] - lse;
}

/** summed cross-entropy of the true next tokens and summed KL(clean ‖ patched), over scored positions */
function compare(clean: Float64Array, lp: Float64Array, seqs: EvalSequences, first: number, S: number, V: number, skip: number): { ce: number; kl: number } {
  const P = seqs.P;
  let ce = 0, kl = 0;
  for (let s = 0; s < S; s++) {
    for (let pos = skip; pos < P - 1; pos++) {
      const o = (s * P + pos) * V;
      ce -= lp[o + seqs.ids[(first + s) * P + pos + 1]];
      let k = 0;
      for (let i = 0; i < V; i++) k += Math.exp(clean[o + i]) * (clean[o + i] - lp[o + i]);
      kl += k;
    }
  }
  return { ce, kl };
}
