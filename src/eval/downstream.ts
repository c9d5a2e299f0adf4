// Downstream loss (docs/metrics.md#downstream-loss): the SAE's reconstruction replaces the activation at its
// layer and site inside the language model's forward pass, and the next-token predictions are
// compared with the clean model's on held-out sequences. Passes: clean, SAE spliced, zero
// ablation, mean ablation (the mean activation over the scored positions of the same sequences).
//   ce_*                 mean next-token cross-entropy (nats)
//   ce_loss_recovered    (CE_zero − CE_sae) / (CE_zero − CE_clean); *_mean_ablation: the same with CE_mean
//   delta_loss           CE_sae − CE_clean
//   kl_*                 mean over positions of KL(p_clean ‖ p_patched), summed over the vocabulary
//   kl_score             (KL_zero − KL_sae) / KL_zero
// Which positions are patched and which scored is the convention's (docs/downstream.md):
//   sae       positions before `skip` (BOS, which the SAE did not train on) are left clean in every
//             pass and not scored; the predictions made at positions skip .. P−2 are scored
//   saelens   special tokens (by id: <unk>, BOS, EOS, pad) keep their clean activation under the
//             SAE; the ablations replace every position; predictions made at special tokens are not
//             scored (CE at positions 0 .. P−2, KL at 0 .. P−1)
//   saebench  as saelens, but the SAE is spliced at every position and the special tokens are
//             BOS, EOS and pad
import type { Engine } from "../engine/types.ts";
import { DOWNSTREAM_CONVENTIONS, type Config } from "../config/schema.ts";
import type { DataSource, EvalSequences } from "../data/source.ts";
import { SEQ_GROUP } from "../lm/harvest.ts";
import { harvestGroup } from "../lm/harvest.ts";
import { BOS, loadLlama, type LlamaModel as Lm } from "../lm/llama.ts";
import { specialTokens, Tokenizer, type SpecialTokens } from "../lm/tokenizer.ts";
import { SaeError } from "../errors.ts";
import { recordedSource } from "../data/store.ts";
import type { ParamSet } from "../sae/params.ts";
import type { SaeModel } from "../sae/variant.ts";
import { LlamaBatch, SITES, type LlamaModel, type Site } from "../lm/llama.ts";

export { DOWNSTREAM_CONVENTIONS };
export type Convention = (typeof DOWNSTREAM_CONVENTIONS)[number];

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
export function planDownstream(c: Config, data: DataSource, e: Engine, opt: DownstreamOptions): Omit<DownstreamInput, "sae" | "params" | "convention"> | null {
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
  // a tokenizer file can name a padding token; the other special ids are llama2.c's own
  const tok = c.data.source === "model" && c.data.model!.tokenizer ? new Tokenizer(c.data.model!.tokenizer, lm.config.vocab) : null;
  return { e, lm, layer, site, skip, special: specialTokens(tok), seqs };
}


export interface DownstreamResult {
  /** how positions were patched and scored (docs/downstream.md) */
  convention: Convention;
  /** sae: the leading positions left clean and unscored; 0 in the other conventions */
  skip_positions: number;
  /** saelens, saebench: the token ids that are not scored (and, for saelens, not spliced); [] for sae */
  special_token_ids: number[];
  model: string;
  layer: number;
  site: Site;
  sequences: number;
  /** scored next-token predictions (CE) */
  tokens: number;
  /** scored positions of the KL (saelens and saebench also score the last position, whose next token is unknown) */
  kl_tokens: number;
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
  /** sae convention: leading positions left alone */
  skip: number;
  /** the ids saelens and saebench look for; default llama2.c's (no pad) */
  special?: SpecialTokens;
  seqs: EvalSequences;
  /** the SAE in raw activation units (final/ weights) */
  sae: SaeModel;
  params: ParamSet;
  /** default sae */
  convention?: Convention;
}

/** The token ids a convention does not score: SAELens collects every special token its tokenizer
 *  names (for Llama's: <unk>, BOS, EOS, pad), SAEBench passes BOS, EOS and pad (docs/downstream.md). */
export function specialIds(convention: Convention, sp: SpecialTokens): number[] {
  if (convention === "sae") return [];
  const ids = convention === "saelens" ? [sp.unk, sp.bos, sp.eos] : [sp.bos, sp.eos];
  if (sp.pad !== null) ids.push(sp.pad);
  return [...new Set(ids)].sort((a, b) => a - b);
}

/** Per position of the sequences, [count, P], 1 where a pass or a score applies. */
export interface PositionMasks {
  /** the SAE's reconstruction replaces the activation */
  splice: Uint8Array;
  /** zero and mean ablation replace the activation */
  ablate: Uint8Array;
  /** the prediction made here (of the next token) counts in the CE; never at P − 1 */
  ce: Uint8Array;
  /** the KL of the prediction made here counts */
  kl: Uint8Array;
}

export function positionMasks(convention: Convention, seqs: EvalSequences, skip: number, sp: SpecialTokens): PositionMasks {
  const { ids, count, P } = seqs, n = count * P;
  const m: PositionMasks = { splice: new Uint8Array(n), ablate: new Uint8Array(n), ce: new Uint8Array(n), kl: new Uint8Array(n) };
  const special = new Set(specialIds(convention, sp));
  for (let i = 0; i < n; i++) {
    const pos = i % P;
    if (convention === "sae") {
      const on = pos >= skip ? 1 : 0;
      m.splice[i] = m.ablate[i] = on;
      m.ce[i] = m.kl[i] = pos < P - 1 ? on : 0;
    } else {
      // SAELens and SAEBench mask by the token at the position, wherever it is
      const plain = special.has(ids[i]) ? 0 : 1;
      m.splice[i] = convention === "saelens" ? plain : 1;
      m.ablate[i] = 1;
      m.kl[i] = plain;
      m.ce[i] = pos < P - 1 ? plain : 0;
    }
  }
  return m;
}

type Patch = "clean" | "sae" | "zero" | "mean";

export function downstreamEval(o: DownstreamInput): DownstreamResult {
  return downstreamEvals(o, [o.convention ?? "sae"])[0];
}

/** Several conventions on the same sequences; the clean passes are shared. */
export function downstreamEvals(o: DownstreamInput, conventions: readonly Convention[]): DownstreamResult[] {
  const { lm, seqs } = o;
  const sp = o.special ?? specialTokens();
  const plans = conventions.map((convention) => {
    const masks = positionMasks(convention, seqs, o.skip, sp);
    const sums = { ce: { clean: 0, sae: 0, zero: 0, mean: 0 }, kl: { clean: 0, sae: 0, zero: 0, mean: 0 } };
    return { convention, masks, sums, mean: new Float32Array(0) as Float32Array };
  });
  const means = meanActivations(o, plans.map((p) => p.masks.ce));
  plans.forEach((p, i) => (p.mean = means[i]));
  for (let first = 0; first < seqs.count; first += SEQ_GROUP) {
    const S = Math.min(SEQ_GROUP, seqs.count - first);
    const clean = run(o, first, S, null);
    for (const { masks, sums, mean } of plans) {
      for (const patch of ["clean", "sae", "zero", "mean"] as const) {
        const lp = patch === "clean" ? clean : run(o, first, S, { patch, masks, mean });
        const { ce, kl } = compare(clean, lp, seqs, first, S, lm.config.vocab, masks);
        sums.ce[patch] += ce;
        sums.kl[patch] += kl;
      }
    }
  }
  return plans.map(({ convention, masks, sums }) => {
    const nCe = count(masks.ce), nKl = count(masks.kl);
    const ce = (p: Patch) => sums.ce[p] / nCe, kl = (p: Patch) => sums.kl[p] / nKl;
    return {
      convention, skip_positions: convention === "sae" ? o.skip : 0, special_token_ids: specialIds(convention, sp),
      model: lm.file, layer: o.layer, site: o.site, sequences: seqs.count, tokens: nCe, kl_tokens: nKl,
      ce_clean: ce("clean"), ce_sae: ce("sae"), ce_zero_ablation: ce("zero"), ce_mean_ablation: ce("mean"),
      ce_loss_recovered: (ce("zero") - ce("sae")) / (ce("zero") - ce("clean")),
      ce_loss_recovered_mean_ablation: (ce("mean") - ce("sae")) / (ce("mean") - ce("clean")),
      delta_loss: ce("sae") - ce("clean"),
      kl_sae: kl("sae"), kl_zero_ablation: kl("zero"), kl_mean_ablation: kl("mean"),
      kl_score: (kl("zero") - kl("sae")) / kl("zero"),
    };
  });
}

function count(m: Uint8Array): number {
  let n = 0;
  for (const v of m) n += v;
  return n;
}

/** for each mask [count, P]: the site's clean mean activation [dim] over the positions it marks (one pass) */
function meanActivations(o: DownstreamInput, masks: Uint8Array[]): Float32Array[] {
  const dim = o.lm.config.dim, P = o.seqs.P;
  const acc = masks.map(() => new Float64Array(dim)), n = masks.map(() => 0);
  for (let first = 0; first < o.seqs.count; first += SEQ_GROUP) {
    const S = Math.min(SEQ_GROUP, o.seqs.count - first);
    forward(o, first, S, {
      layer: o.layer, site: o.site,
      fn: (act, pos) => {
        masks.forEach((m, j) => {
          for (let s = 0; s < S; s++) {
            if (!m[(first + s) * P + pos]) continue;
            for (let d = 0; d < dim; d++) acc[j][d] += act[s * dim + d];
            n[j]++;
          }
        });
      },
    });
  }
  return acc.map((a, j) => Float32Array.from(a, (v) => v / Math.max(1, n[j])));
}

/** log-probabilities [S, P, V] of one pass; null: the clean model */
function run(o: DownstreamInput, first: number, S: number, p: { patch: Exclude<Patch, "clean">; masks: PositionMasks; mean: Float32Array } | null): Float64Array {
  const dim = o.lm.config.dim, P = o.seqs.P;
  const fn = (act: Float32Array, pos: number) => {
    if (!p) return;
    const mask = p.patch === "sae" ? p.masks.splice : p.masks.ablate;
    const rows: number[] = [];
    for (let s = 0; s < S; s++) if (mask[(first + s) * P + pos]) rows.push(s);
    if (rows.length === 0) return;
    if (p.patch === "zero") for (const s of rows) act.fill(0, s * dim, (s + 1) * dim);
    else if (p.patch === "mean") for (const s of rows) act.set(p.mean, s * dim);
    else {
      // every row goes through the SAE, and the masked ones take its output (as SAELens's torch.where)
      const { Xhat } = o.sae.forward({ e: o.e, p: o.params, X: act, B: S, coeff: 0, dead: null });
      for (const s of rows) act.set(Xhat.subarray(s * dim, (s + 1) * dim), s * dim);
    }
  };
  return forward(o, first, S, { layer: o.layer, site: o.site, fn, writes: p !== null });
}

function forward(o: DownstreamInput, first: number, S: number, hook: { layer: number; site: Site; fn: (a: Float32Array, pos: number) => void; writes?: boolean }): Float64Array {
  const { P, ids } = o.seqs;
  const V = o.lm.config.vocab;
  const batch = new LlamaBatch(o.lm, o.e, S, P, [hook]);
  const out = new Float64Array(S * P * V);
  const cur = new Int32Array(S);
  for (let pos = 0; pos < P; pos++) {
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

/** summed cross-entropy of the true next tokens and summed KL(clean ‖ patched), over the masks' positions */
function compare(clean: Float64Array, lp: Float64Array, seqs: EvalSequences, first: number, S: number, V: number, m: PositionMasks): { ce: number; kl: number } {
  const P = seqs.P;
  let ce = 0, kl = 0;
  for (let s = 0; s < S; s++) {
    for (let pos = 0; pos < P; pos++) {
      const i = (first + s) * P + pos, o = (s * P + pos) * V;
      if (m.ce[i]) ce -= lp[o + seqs.ids[i + 1]];
      if (!m.kl[i]) continue;
      let k = 0;
      for (let j = 0; j < V; j++) k += Math.exp(clean[o + j]) * (clean[o + j] - lp[o + j]);
      kl += k;
    }
  }
  return { ce, kl };
}
