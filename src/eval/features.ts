// What a trained SAE's latents respond to (docs/features.md): one inference pass over held-out
// rows keeps every non-zero activation, grouped by latent; from that come each latent's firing
// rate, mean and max activation, histogram, top-activating rows and rows drawn from activation
// quantiles (the top alone flatters a latent), and the summary statistics of the whole dictionary.
// Per data kind: token contexts and the output tokens a decoder direction promotes (language-model
// data), the best-matching ground-truth feature (synthetic data).
//
// Memory: 8 bytes per non-zero activation (row and value), 12 while the pass runs; N·L0 of them.
import type { Arr, Engine } from "../engine/types.ts";
import type { ParamSet } from "../sae/params.ts";
import type { SaeModel } from "../sae/variant.ts";
import type { GroundTruth } from "../data/source.ts";
import type { LlamaModel } from "../lm/llama.ts";
import { Rng } from "../rng.ts";
import { SaeError } from "../errors.ts";

/** Non-zero activations grouped by latent (CSR): latent i's are rows/vals[offsets[i] .. offsets[i+1]), rows ascending. */
export interface Activations {
  /** rows (tokens) in the pass */
  N: number;
  /** latents */
  H: number;
  offsets: Int32Array;
  rows: Int32Array;
  vals: Float32Array;
}

/** more non-zero activations than this (2 GiB while collecting) is refused: pass fewer tokens */
const MAX_PAIRS = 2 ** 27 + 2 ** 26;

/** The inference code of X [N, D] in chunks of `chunk` rows, every f > 0 kept. */
export function collectActivations(e: Engine, model: SaeModel, p: ParamSet, X: Float32Array, N: number, chunk = 4096): Activations {
  const { D, H } = model.dims;
  let cap = Math.max(1024, N * 8), n = 0;
  let lat = new Int32Array(cap), row = new Int32Array(cap), val = new Float32Array(cap);
  const push = (i: number, r: number, v: number) => {
    if (n === cap) {
      if (cap >= MAX_PAIRS) throw new SaeError("usage", `${N} tokens give more than ${MAX_PAIRS} non-zero activations (${(n / N).toFixed(0)}+ per token), more than sae features holds in memory`, "pass fewer tokens with --tokens");
      cap = Math.min(MAX_PAIRS, cap * 2);
      const grow = <T extends Int32Array | Float32Array>(a: T, b: T) => (b.set(a), b);
      lat = grow(lat, new Int32Array(cap)); row = grow(row, new Int32Array(cap)); val = grow(val, new Float32Array(cap));
    }
    lat[n] = i; row[n] = r; val[n] = v; n++;
  };
  for (let start = 0; start < N; start += chunk) {
    const B = Math.min(chunk, N - start);
    const { code } = model.forward({ e, p, X: X.subarray(start * D, (start + B) * D), B, coeff: 0, dead: null });
    if (code.kind === "dense") {
      const F = code.F;
      for (let b = 0; b < B; b++) for (let i = 0; i < H; i++) if (F[b * H + i] > 0) push(i, start + b, F[b * H + i]);
    } else {
      for (let j = 0; j < B * code.k; j++) if (code.val[j] > 0) push(code.idx[j], start + Math.floor(j / code.k), code.val[j]);
    }
  }
  // counting sort by latent; stable, so each latent's rows stay ascending
  const offsets = new Int32Array(H + 1);
  for (let j = 0; j < n; j++) offsets[lat[j] + 1]++;
  for (let i = 0; i < H; i++) offsets[i + 1] += offsets[i];
  const fill = offsets.slice(0, H);
  const rows = new Int32Array(n), vals = new Float32Array(n);
  for (let j = 0; j < n; j++) {
    const at = fill[lat[j]]++;
    rows[at] = row[j];
    vals[at] = val[j];
  }
  return { N, H, offsets, rows, vals };
}

/** Per latent over the pass: tokens it fires on, firing rate, mean activation where it fires, max activation. */
export interface LatentStats { fires: Int32Array; firing_rate: Float64Array; mean_activation: Float64Array; max_activation: Float64Array }

export function latentStats(a: Activations): LatentStats {
  const { H, N, offsets, vals } = a;
  const s: LatentStats = { fires: new Int32Array(H), firing_rate: new Float64Array(H), mean_activation: new Float64Array(H), max_activation: new Float64Array(H) };
  for (let i = 0; i < H; i++) {
    let sum = 0, max = 0;
    for (let j = offsets[i]; j < offsets[i + 1]; j++) {
      sum += vals[j];
      if (vals[j] > max) max = vals[j];
    }
    const c = offsets[i + 1] - offsets[i];
    s.fires[i] = c;
    s.firing_rate[i] = c / N;
    s.mean_activation[i] = c > 0 ? sum / c : 0;
    s.max_activation[i] = max;
  }
  return s;
}

/** latent i's activation at a row (0 where it does not fire): binary search in its ascending rows */
export function activationAt(a: Activations, i: number, row: number): number {
  let lo = a.offsets[i], hi = a.offsets[i + 1];
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (a.rows[mid] < row) lo = mid + 1; else hi = mid;
  }
  return lo < a.offsets[i + 1] && a.rows[lo] === row ? a.vals[lo] : 0;
}

export interface Example { row: number; activation: number }

/**
 * Rows of one activation quantile: the firing tokens sorted by activation, ranks
 * [⌊q_lo·c⌋, ⌊q_hi·c⌋) of c; lo and hi are the smallest and largest activation in it.
 */
export interface QuantileBucket { q_lo: number; q_hi: number; lo: number; hi: number; count: number; examples: Example[] }

export interface LatentDetail {
  id: number;
  fires: number;
  firing_rate: number;
  mean_activation: number;
  max_activation: number;
  /** firing activations in `counts.length` equal bins over (0, max]; tokens where it is 0 are not counted */
  histogram: { max: number; counts: number[] };
  /** the most-activating rows, largest first (ties: lower row first) */
  top: Example[];
  quantiles: QuantileBucket[];
}

export interface DetailOptions {
  /** top-activating rows kept */
  topExamples: number;
  /** equal-count activation buckets */
  quantiles: number;
  /** rows drawn from each bucket (without replacement, seeded) */
  perQuantile: number;
  histogramBins: number;
  seed: number;
}

export const DEFAULT_DETAIL: DetailOptions = { topExamples: 20, quantiles: 5, perQuantile: 4, histogramBins: 24, seed: 0 };

const QUANTILE_STREAM = 31;

export function latentDetail(a: Activations, i: number, o: DetailOptions = DEFAULT_DETAIL): LatentDetail {
  const start = a.offsets[i], c = a.offsets[i + 1] - start;
  // firing tokens by activation, largest first (ties: lower row first)
  const order = Array.from({ length: c }, (_, j) => start + j);
  order.sort((x, y) => a.vals[y] - a.vals[x] || a.rows[x] - a.rows[y]);
  const ex = (j: number): Example => ({ row: a.rows[j], activation: a.vals[j] });
  const max = c > 0 ? a.vals[order[0]] : 0;
  const counts = new Array<number>(o.histogramBins).fill(0);
  let sum = 0;
  for (let j = start; j < start + c; j++) {
    sum += a.vals[j];
    counts[Math.min(o.histogramBins - 1, Math.floor((a.vals[j] / max) * o.histogramBins))]++;
  }
  // buckets in ascending activation: rank r (0 = smallest) is order[c − 1 − r]
  const quantiles: QuantileBucket[] = [];
  const rng = new Rng(o.seed, QUANTILE_STREAM, i);
  for (let q = 0; q < o.quantiles; q++) {
    const r0 = Math.floor((q * c) / o.quantiles), r1 = Math.floor(((q + 1) * c) / o.quantiles);
    if (r1 <= r0) continue;
    const ranks = Array.from({ length: r1 - r0 }, (_, j) => r0 + j);
    for (let j = 0; j < Math.min(o.perQuantile, ranks.length); j++) {
      const k = j + rng.int(ranks.length - j);
      [ranks[j], ranks[k]] = [ranks[k], ranks[j]];
    }
    const picked = ranks.slice(0, o.perQuantile).map((r) => ex(order[c - 1 - r])).sort((x, y) => y.activation - x.activation || x.row - y.row);
    quantiles.push({ q_lo: q / o.quantiles, q_hi: (q + 1) / o.quantiles, lo: a.vals[order[c - 1 - r0]], hi: a.vals[order[c - r1]], count: r1 - r0, examples: picked });
  }
  return {
    id: i, fires: c, firing_rate: c / a.N, mean_activation: c > 0 ? sum / c : 0, max_activation: max,
    histogram: { max, counts },
    top: order.slice(0, o.topExamples).map(ex),
    quantiles,
  };
}

/** The dictionary as a whole (docs/features.md, Summary statistics). */
export interface FeatureSummary {
  tokens: number;
  latents: number;
  dead_frac: number;
  /** latents firing on more than 10% / 1% of the tokens */
  frac_firing_gt_10pct: number;
  frac_firing_gt_1pct: number;
  /** the max activations of the latents that fire: quantiles, and latents per decade of max activation */
  max_activation: { min: number; p10: number; p50: number; p90: number; max: number; per_decade: Record<string, number> };
  ground_truth?: { n_features: number; frac_matched_0_9: number; frac_mixture: number };
}

export function summarize(s: LatentStats, N: number, truth: TruthMatch[] | null): FeatureSummary {
  const H = s.fires.length;
  let dead = 0, gt10 = 0, gt1 = 0;
  const maxes: number[] = [];
  for (let i = 0; i < H; i++) {
    if (s.fires[i] === 0) { dead++; continue; }
    if (s.firing_rate[i] > 0.1) gt10++;
    if (s.firing_rate[i] > 0.01) gt1++;
    maxes.push(s.max_activation[i]);
  }
  maxes.sort((x, y) => x - y);
  const at = (q: number) => (maxes.length ? maxes[Math.min(maxes.length - 1, Math.floor(q * maxes.length))] : 0);
  const per_decade: Record<string, number> = {};
  for (const m of maxes) {
    const d = Math.floor(Math.log10(m));
    const key = `[1e${d},1e${d + 1})`;
    per_decade[key] = (per_decade[key] ?? 0) + 1;
  }
  const out: FeatureSummary = {
    tokens: N, latents: H, dead_frac: dead / H, frac_firing_gt_10pct: gt10 / H, frac_firing_gt_1pct: gt1 / H,
    max_activation: { min: maxes[0] ?? 0, p10: at(0.1), p50: at(0.5), p90: at(0.9), max: maxes[maxes.length - 1] ?? 0, per_decade },
  };
  if (truth) {
    out.ground_truth = {
      n_features: truth[0]?.n_features ?? 0,
      frac_matched_0_9: truth.filter((t) => t.kind === "match").length / H,
      frac_mixture: truth.filter((t) => t.kind === "mixture").length / H,
    };
  }
  return out;
}

/**
 * A decoder row against the true features (docs/features.md, "match" and "mixture"): the two
 * features with the largest cosines a, b; span_cosine = cos(d̂, its projection onto span{g_a, g_b});
 * coefficients α, β of that projection. match: cos_a > 0.9. mixture: not a match, span_cosine > 0.9
 * and α, β > 0 (two true features together explain the direction, neither alone does).
 */
export interface TruthMatch {
  feature: number;
  cosine: number;
  second: number;
  second_cosine: number;
  span_cosine: number;
  kind: "match" | "mixture" | "neither";
  n_features: number;
}

export function matchTruth(e: Engine, Wdec: Arr, H: number, D: number, gt: GroundTruth): TruthMatch[] {
  const atoms = new Float32Array(Wdec);
  e.normalizeRows(atoms, H, D);
  const truth = new Float32Array(gt.features);
  e.normalizeRows(truth, gt.G, D);
  const C = new Float32Array(H * gt.G); // cos(d̂_i, g_j)  [H, G]
  e.gemm(false, true, H, gt.G, D, 1, atoms, truth, 0, C);
  const out: TruthMatch[] = [];
  for (let i = 0; i < H; i++) {
    let a = -1, b = -1;
    for (let j = 0; j < gt.G; j++) {
      const v = C[i * gt.G + j];
      if (a < 0 || v > C[i * gt.G + a]) { b = a; a = j; } else if (b < 0 || v > C[i * gt.G + b]) b = j;
    }
    const ca = C[i * gt.G + a];
    let span = ca, kind: TruthMatch["kind"] = ca > 0.9 ? "match" : "neither";
    if (b >= 0) {
      const cb = C[i * gt.G + b];
      let rho = 0;
      for (let d = 0; d < D; d++) rho += truth[a * D + d] * truth[b * D + d];
      const det = 1 - rho * rho;
      if (det > 1e-6) {
        const alpha = (ca - rho * cb) / det, beta = (cb - rho * ca) / det;
        span = Math.sqrt(Math.max(0, (ca * ca + cb * cb - 2 * rho * ca * cb) / det));
        if (kind !== "match" && span > 0.9 && alpha > 0 && beta > 0) kind = "mixture";
      }
    }
    out.push({ feature: a, cosine: ca, second: b, second_cosine: b >= 0 ? C[i * gt.G + b] : NaN, span_cosine: span, kind, n_features: gt.G });
  }
  return out;
}

/** Held-out token ids [count, P]; eval row r is sequence ⌊r / (P − skip)⌋, position skip + r mod (P − skip). */
export interface TokenContext { ids: Int32Array; count: number; P: number; skip: number }

export interface ContextWindow {
  sequence: number;
  position: number;
  /** token ids of positions [position − before, position + after], clipped to the sequence */
  tokens: number[];
  /** the latent's activation at each of them; null where the position is not an eval row (BOS, skipped, past the split) */
  acts: (number | null)[];
  /** index of the example's own token in tokens */
  target: number;
}

export function contextWindow(a: Activations, i: number, row: number, ctx: TokenContext, before = 16, after = 4): ContextWindow {
  const L = ctx.P - ctx.skip;
  const seq = Math.floor(row / L), pos = ctx.skip + (row % L);
  const from = Math.max(0, pos - before), to = Math.min(ctx.P - 1, pos + after);
  const tokens: number[] = [], acts: (number | null)[] = [];
  for (let t = from; t <= to; t++) {
    tokens.push(ctx.ids[seq * ctx.P + t]);
    const r = seq * L + t - ctx.skip;
    acts.push(t >= ctx.skip && r < a.N ? activationAt(a, i, r) : null);
  }
  return { sequence: seq, position: pos, tokens, acts, target: pos - from };
}

export interface TokenEffect { token: number; value: number }

/**
 * The output tokens each decoder row promotes and suppresses most: W_U (g ⊙ d_i), g the final
 * RMSNorm's weight, W_U the unembedding [V, dim] (the logit change per unit of activation, leaving
 * out the norm's 1/rms factor, which depends on the token). Returns the n largest and n smallest.
 */
export function logitEffects(e: Engine, lm: LlamaModel, Wdec: Arr, D: number, latents: number[], n = 10): { promoted: TokenEffect[]; suppressed: TokenEffect[] }[] {
  const V = lm.config.vocab, M = latents.length;
  if (M === 0) return [];
  const dirs = new Float64Array(M * D);
  latents.forEach((i, m) => { for (let d = 0; d < D; d++) dirs[m * D + d] = Wdec[i * D + d] * lm.rmsFinal[d]; });
  const logits = new Float64Array(M * V); // [M, V]
  e.gemm(false, true, M, V, D, 1, dirs, lm.classifier, 0, logits);
  return latents.map((_, m) => {
    const ids = Array.from({ length: V }, (_, v) => v).sort((x, y) => logits[m * V + y] - logits[m * V + x] || x - y);
    const eff = (v: number): TokenEffect => ({ token: v, value: logits[m * V + v] });
    return { promoted: ids.slice(0, n).map(eff), suppressed: ids.slice(-n).reverse().map(eff) };
  });
}

/** Latents chosen for pages: explicit ids, the n with the largest statistic, or n at random among those that fire. */
export type Selection = { kind: "latents"; ids: number[] } | { kind: "top"; n: number } | { kind: "random"; n: number };

export const SORT_STATS = ["firing_rate", "mean_activation", "max_activation", "id", "cosine"] as const;
export type SortStat = (typeof SORT_STATS)[number];

/** latent ids ordered by a statistic, largest first (id: ascending); ties by id */
export function sortLatents(s: LatentStats, stat: SortStat, truth: TruthMatch[] | null): number[] {
  const H = s.fires.length;
  const ids = Array.from({ length: H }, (_, i) => i);
  if (stat === "id") return ids;
  const key = (i: number) => (stat === "cosine" ? truth![i].cosine : s[stat][i]);
  return ids.sort((x, y) => key(y) - key(x) || x - y);
}

const SELECT_STREAM = 32;

export function selectLatents(sel: Selection, s: LatentStats, sorted: number[], seed: number): number[] {
  if (sel.kind === "latents") return sel.ids;
  if (sel.kind === "top") return sorted.slice(0, sel.n);
  const alive = Array.from({ length: s.fires.length }, (_, i) => i).filter((i) => s.fires[i] > 0);
  const rng = new Rng(seed, SELECT_STREAM);
  const n = Math.min(sel.n, alive.length);
  for (let j = 0; j < n; j++) {
    const k = j + rng.int(alive.length - j);
    [alive[j], alive[k]] = [alive[k], alive[j]];
  }
  return alive.slice(0, n).sort((x, y) => x - y);
}

// ---- the features document (features.json; docs/features.md) ----

export type DataKind = "language_model" | "mnist" | "synthetic" | "activations";

export interface ExampleOut extends Example {
  /** MNIST: the digit's class */
  label?: number;
  /** language-model data with token ids: the context window, with each token's text when there is a tokenizer */
  context?: ContextWindow & { text?: string[] };
}

export interface LatentPage extends Omit<LatentDetail, "top" | "quantiles"> {
  decoder_norm: number;
  top: ExampleOut[];
  quantiles: (Omit<QuantileBucket, "examples"> & { examples: ExampleOut[] })[];
  /** language-model data: the output tokens the decoder direction promotes and suppresses most */
  logits?: { promoted: (TokenEffect & { text?: string })[]; suppressed: (TokenEffect & { text?: string })[] };
  /** synthetic data */
  ground_truth?: Omit<TruthMatch, "n_features">;
}

export interface FeatureDocument {
  format: "sae-features";
  version: 1;
  run: string;
  variant: string;
  d_in: number;
  d_sae: number;
  data: { kind: DataKind; describe: string; model?: string; layer?: number; site?: string; tokenizer?: string | null };
  options: { selection: string; sort: SortStat; top_examples: number; quantiles: number; per_quantile: number; histogram_bins: number; context_before: number; context_after: number; seed: number };
  summary: FeatureSummary;
  /** every latent's statistics, indexed by latent id */
  stats: { fires: number[]; firing_rate: number[]; mean_activation: number[]; max_activation: number[]; cosine?: number[] };
  /** latent ids sorted by options.sort */
  order: number[];
  latents: LatentPage[];
}

export interface FeatureInput {
  e: Engine;
  model: SaeModel;
  params: ParamSet;
  /** held-out rows [N, D] in raw units (the final weights have the input scale folded in) */
  X: Float32Array;
  N: number;
  run: string;
  variant: string;
  data: FeatureDocument["data"];
  /** language-model data: the model (for the logit effects), a token decoder, the held-out token ids (any may be missing) */
  lm?: { model: LlamaModel | null; decode: ((token: number, prev: number) => string) | null; context: TokenContext | null };
  truth?: GroundTruth | null;
  /** MNIST: the class of held-out row r */
  label?: (row: number) => number;
  selection: Selection;
  sort: SortStat;
  detail: DetailOptions;
  context?: { before: number; after: number };
}

export function describeSelection(s: Selection): string {
  return s.kind === "latents" ? `latents ${s.ids.join(",")}` : `${s.kind} ${s.n}`;
}

/** The pass, the statistics and the pages of the selected latents. */
export function buildFeatures(inp: FeatureInput): { doc: FeatureDocument; acts: Activations; stats: LatentStats; truth: TruthMatch[] | null } {
  const { e, model, params } = inp;
  const { D, H } = model.dims;
  const Wdec = params.get("W_dec");
  const before = inp.context?.before ?? 16, after = inp.context?.after ?? 4;
  for (const i of inp.selection.kind === "latents" ? inp.selection.ids : []) {
    if (!(Number.isInteger(i) && i >= 0 && i < H)) throw new SaeError("usage", `latent ${i} does not exist: the SAE has d_sae = ${H} latents (0..${H - 1})`, `pick ids in 0..${H - 1}`);
  }
  const acts = collectActivations(e, model, params, inp.X, inp.N);
  const stats = latentStats(acts);
  const truth = inp.truth ? matchTruth(e, Wdec, H, D, inp.truth) : null;
  if (inp.sort === "cosine" && !truth) throw new SaeError("usage", "--sort cosine needs ground-truth features (synthetic data)", "sort by firing_rate, mean_activation, max_activation or id");
  const order = sortLatents(stats, inp.sort, truth);
  const chosen = selectLatents(inp.selection, stats, order, inp.detail.seed);
  const norms = new Float32Array(H);
  e.rowNorms(Wdec, H, D, norms);
  const lm = inp.lm;
  const effects = lm?.model ? logitEffects(e, lm.model, Wdec, D, chosen) : null;
  const withText = (x: TokenEffect) => (lm?.decode ? { ...x, text: lm.decode(x.token, -1) } : x);
  const enrich = (i: number, x: Example): ExampleOut => {
    const out: ExampleOut = { ...x };
    if (inp.label) out.label = inp.label(x.row);
    if (lm?.context) {
      const w = contextWindow(acts, i, x.row, lm.context, before, after);
      const from = w.position - w.target, ctx = lm.context;
      // the token before the window decides whether a word-initial space shows (none after BOS)
      const prev = (k: number) => (k > 0 ? w.tokens[k - 1] : from > 0 ? ctx.ids[w.sequence * ctx.P + from - 1] : -1);
      out.context = lm.decode ? { ...w, text: w.tokens.map((t, k) => lm.decode!(t, prev(k))) } : w;
    }
    return out;
  };
  const latents: LatentPage[] = chosen.map((i, m) => {
    const d = latentDetail(acts, i, inp.detail);
    const page: LatentPage = {
      ...d, decoder_norm: norms[i],
      top: d.top.map((x) => enrich(i, x)),
      quantiles: d.quantiles.map((q) => ({ ...q, examples: q.examples.map((x) => enrich(i, x)) })),
    };
    if (effects) page.logits = { promoted: effects[m].promoted.map(withText), suppressed: effects[m].suppressed.map(withText) };
    if (truth) {
      const { n_features: _, ...t } = truth[i];
      page.ground_truth = t;
    }
    return page;
  });
  const doc: FeatureDocument = {
    format: "sae-features", version: 1, run: inp.run, variant: inp.variant, d_in: D, d_sae: H, data: inp.data,
    options: { selection: describeSelection(inp.selection), sort: inp.sort, top_examples: inp.detail.topExamples, quantiles: inp.detail.quantiles, per_quantile: inp.detail.perQuantile, histogram_bins: inp.detail.histogramBins, context_before: before, context_after: after, seed: inp.detail.seed },
    summary: summarize(stats, inp.N, truth),
    stats: {
      fires: Array.from(stats.fires), firing_rate: Array.from(stats.firing_rate), mean_activation: Array.from(stats.mean_activation), max_activation: Array.from(stats.max_activation),
      ...(truth ? { cosine: truth.map((t) => t.cosine) } : {}),
    },
    order,
    latents,
  };
  return { doc, acts, stats, truth };
}
