// BatchTopK SAE (Bussmann, Leask & Nanda 2024, arXiv 2412.06410; docs/variants.md#batchtopk). In
// training, R = ReLU((X − b_dec) W_encᵀ + b_enc) keeps its k·B largest entries across the whole
// batch (mean L0 = k exactly; per-token L0 varies), with AuxK as in TopK. Inference must not
// depend on the batch: it uses one global threshold θ, f = R·1[R > θ] (a JumpReLU with θ shared by
// all latents), θ being an exponential moving average (rate 0.01, SAELens) of the smallest value
// kept in each training batch. θ lives in the parameters (non-trainable), so checkpoints and the
// exported weights carry it.
//
// Selection without sorting B·H values, exact either way: the candidates are the entries above a
// fraction of θ (a vectorised scan; once θ exists), or each row's top kc (before). The batch's k·B
// largest are among them when there are at least k·B candidates above the fraction (first way), or
// when no row had all kc of its candidates at or above the cut (second way); otherwise the blocks
// are computed again with more candidates. The cut is the (k·B)-th largest candidate (an exact
// radix select); ties at the cut go to the earlier row-major position.
import type { Arr, Engine } from "../../engine/types.ts";
import type { Dims, ForwardResult, LossTerms, SaeModel, StepInput } from "../variant.ts";
import { Workspace, centerInput, denseDecode, residual, standardSpecs } from "../variant.ts";
import { AuxK, codeBackward, type AuxState } from "../sparse.ts";
import { ENCODER_BLOCK_ROWS, type TopKOptions } from "../topk/fast.ts";
import type { ParamSet, ParamSpec } from "../params.ts";

/** the same options as TopK; k is the mean number of active latents per token */
export type BatchTopKOptions = TopKOptions;

export const THRESHOLD_EMA_RATE = 0.01;

/** what backward needs (a training forward's): the centred input, the residual, the selected code [B, k], AuxK's state */
interface BatchTopKState { training: boolean; Xc: Arr; E: Arr; idx: Int32Array; val: Arr; k: number; aux: AuxState | null }

/** what BatchTopK and Matryoshka (which selects its code the same way) share: a workspace, AuxK, the batch selector */
export function batchTopKParts(dims: Dims, opt: BatchTopKOptions): { ws: Workspace; auxk: AuxK; selector: BatchSelector } {
  const ws = new Workspace();
  const auxk = new AuxK(dims, opt.kAux, opt.auxCoefficient, ws);
  if (opt.auxPath) auxk.path = opt.auxPath;
  return { ws, auxk, selector: new BatchSelector(dims, opt.k, auxk, ws) };
}

/** the model fields both share: BatchTopK's parameters with θ non-trainable, a unit-norm decoder */
export function batchTopKFields(dims: Dims, opt: BatchTopKOptions, ws: Workspace) {
  return {
    dims,
    workspaceBytes: () => ws.bytes(),
    specs: batchTopKSpecs(dims),
    unitNormDecoder: true,
    applyBDecToInput: opt.applyBDecToInput,
    fixedInputBias: opt.fixedInputBias ?? null,
    nonTrainable: ["threshold"],
  };
}

export function createBatchTopK(dims: Dims, opt: BatchTopKOptions): SaeModel<BatchTopKState> {
  const { D, H } = dims;
  const { ws, auxk, selector } = batchTopKParts(dims, opt);

  return {
    variant: "batchtopk",
    ...batchTopKFields(dims, opt, ws),
    writesGradients: ["W_enc", "W_dec"], // codeBackward's (Matryoshka, on the same fields, adds)

    forward({ e, p, X, B, dead, auxTarget, training }): ForwardResult<BatchTopKState> {
      const Wdec = p.get("W_dec"), bDec = p.get("b_dec");
      const Xc = centerInput(e, X, opt.fixedInputBias ?? bDec, opt.applyBDecToInput, B, D, ws.f("Xc", B * D, X));
      if (!training) {
        const r = thresholdForward(e, ws, dims, p, Xc, X, B);
        return { ...r, state: { training: false, Xc, E: r.E, idx: new Int32Array(0), val: r.code.F, k: 0, aux: null } };
      }
      const { idx, val, k: kSel } = selector.select(e, p, Xc, B, dead, X);
      const Xhat = ws.f("Xhat", B * D, X);
      const E = ws.f("E", B * D, X);
      e.gatherRows(idx, val, B, kSel, Wdec, H, D, bDec, Xhat);
      const mse = residual(e, Xhat, X, E) / B;
      const { loss: aux, state: auxState } = auxk.finish(e, p.get("b_enc"), Wdec, E, auxTarget);
      return { terms: { loss: mse + auxk.alpha * aux, mse, sparsity: 0, aux }, code: { kind: "sparse", k: kSel, idx, val }, Xhat, state: { training: true, Xc, E, idx, val, k: kSel, aux: auxState } };
    },

    backward({ e, p, B }: StepInput, state: BatchTopKState, g: ParamSet): number {
      if (!state.training) throw new Error("batchtopk: backward needs a training forward (training: true)");
      return codeBackward(e, ws, auxk, dims, p, g, B, state, opt.applyBDecToInput && !opt.fixedInputBias);
    },
  };
}

/** W_enc, b_enc, W_dec, b_dec and the global threshold θ [1] (a statistic: non-trainable) */
export function batchTopKSpecs(dims: Dims): ParamSpec[] {
  return [...standardSpecs(dims), { name: "threshold", shape: [1] }];
}

/** The inference forward, f = R·1[R > θ] (dense [B, H]), decoded; Xc is the encoder input [B, D]. */
export function thresholdForward(e: Engine, ws: Workspace, dims: Dims, p: ParamSet, Xc: Arr, X: Arr, B: number): { terms: LossTerms; code: { kind: "dense"; F: Arr }; Xhat: Arr; E: Arr } {
  const { D, H } = dims;
  const F = ws.f("F", B * H, X);
  e.gemm(false, true, B, H, D, 1, Xc, p.get("W_enc"), 0, F);
  e.addBias(F, p.get("b_enc"), B, H, true);
  const t = p.get("threshold")[0];
  if (t > 0) for (let j = 0; j < B * H; j++) if (!(F[j] > t)) F[j] = 0;
  const Xhat = denseDecode(e, F, p.get("W_dec"), p.get("b_dec"), dims, B, ws.f("Xhat", B * D, X));
  const E = ws.f("E", B * D, X);
  const mse = residual(e, Xhat, X, E) / B;
  return { terms: { loss: mse, mse, sparsity: 0, aux: 0 }, code: { kind: "dense", F }, Xhat, E };
}

/**
 * BatchTopK's training selection, shared with Matryoshka BatchTopK: the encoder GEMM and per-row
 * candidates in blocks of rows (as in TopK), AuxK's selection from the same blocks, the batch's
 * k·B largest of R = ReLU(P), and θ's update. Candidates are the entries above a fraction of the
 * running threshold θ (≈ the batch's cut) when there is one, found by a vectorised scan; else each
 * row's top kc. Either way the batch's top k·B are provably among them, or the blocks are computed
 * again with more (rare: kc and the fraction are remembered across steps).
 */
export class BatchSelector {
  private readonly dims: Dims;
  private readonly k: number;
  private readonly auxk: AuxK;
  private readonly ws: Workspace;
  /** candidates: room per row, and the fraction of θ above which entries are candidates */
  private kc: number;
  private candidateFraction = 0.9;

  constructor(dims: Dims, k: number, auxk: AuxK, ws: Workspace) {
    this.dims = dims;
    this.k = k;
    this.auxk = auxk;
    this.ws = ws;
    this.kc = Math.min(dims.H, 2 * k);
  }

  /**
   * The code of the batch's k·B largest entries as [B, k'] (k' the largest per-row count,
   * zero-padded; each row's latents ascending), after AuxK's begin() and select(); moves θ to its
   * moving average of the smallest kept value. Xc is the encoder input [B, D].
   */
  select(e: Engine, p: ParamSet, Xc: Arr, B: number, dead: Uint8Array | null, X: Arr): { idx: Int32Array; val: Arr; k: number } {
    const { D, H } = this.dims;
    const ws = this.ws, auxk = this.auxk;
    const Wenc = p.get("W_enc"), bEnc = p.get("b_enc"), theta = p.get("threshold");
    const total = Math.min(this.k * B, B * H);
    const R = Math.min(B, ENCODER_BLOCK_ROWS);
    const P = ws.f("P", R * H, X);
    let idx: Int32Array, val: Arr, kSel: number;
    for (;;) {
      const kc = this.kc;
      const tau = theta[0] > 0 ? this.candidateFraction * theta[0] : null;
      idx = ws.i("idx", B * kc);
      val = ws.f("val", B * kc, X);
      auxk.begin(e, B, dead, Xc, Wenc);
      let widest = 0;
      for (let r0 = 0; r0 < B; r0 += R) {
        const rows = Math.min(R, B - r0);
        const Pb = P.subarray(0, rows * H);
        e.gemm(false, true, rows, H, D, 1, Xc.subarray(r0 * D, (r0 + rows) * D), Wenc, 0, Pb);
        const bi = idx.subarray(r0 * kc, (r0 + rows) * kc), bv = val.subarray(r0 * kc, (r0 + rows) * kc);
        if (tau === null) e.topkRows(Pb, bEnc, null, rows, H, kc, bi, bv);
        else widest = Math.max(widest, e.rowsAbove(Pb, bEnc, tau, rows, H, kc, bi, bv, H));
        auxk.select(e, Pb, bEnc, r0, rows);
      }
      const sel = selectBatch(e, ws, idx, val, B, kc, total, tau !== null && tau > 0);
      if (tau === null) {
        // per-row top kc: complete unless a row had all its kc candidates at or above the cut
        if (sel.complete || kc === H) { ({ idx, val, k: kSel } = sel); break; }
        this.kc = Math.min(H, 2 * kc);
      } else if (widest > kc) {
        this.kc = Math.min(H, Math.ceil(widest * 1.25)); // a row had more candidates than room
      } else if (sel.positives < total && tau > 0) {
        this.candidateFraction = 1 - 2 * (1 - this.candidateFraction); // too few candidates: the cut lies below τ
        if (this.candidateFraction < 0.05) {
          theta[0] = 0; // θ is far off: restart it from this batch (per-row top kc)
          this.candidateFraction = 0.9;
        }
      } else {
        ({ idx, val, k: kSel } = sel);
        // aim for about twice as many candidates as winners: fewer entries to select from
        if (sel.positives > 3 * total) this.candidateFraction = Math.min(0.97, (1 + this.candidateFraction) / 2);
        this.kc = Math.max(2 * this.k, Math.ceil(widest * 1.25));
        break;
      }
    }
    // θ ← EMA of the smallest kept value
    let minKept = Infinity;
    for (let j = 0; j < val.length; j++) if (val[j] > 0 && val[j] < minKept) minKept = val[j];
    if (Number.isFinite(minKept)) theta[0] = theta[0] > 0 ? (1 - THRESHOLD_EMA_RATE) * theta[0] + THRESHOLD_EMA_RATE * minKept : minKept;
    return { idx, val, k: kSel };
  }
}

/**
 * The batch cut (Engine.batchCut): the `total` largest positive values among the per-row
 * candidates (idx, val) [B, kc] as a code [B, m] (m = the largest per-row count, zero-padded), so
 * the decode and the gradients do not walk the candidates that lost. `complete` is false when some
 * row's candidates were all at or above the cut: that row may hold more winners than kc, and the
 * caller retries with more candidates. `packed`: the candidates came from rowsAbove with a positive
 * threshold (each row's first, then zero padding; kc is sized for the widest row, about three times
 * the average), so the cut's passes stop at a row's first zero.
 */
function selectBatch(e: Engine, ws: Workspace, idx: Int32Array, val: Arr, B: number, kc: number, total: number, packed: boolean): { complete: boolean; positives: number; idx: Int32Array; val: Arr; k: number } {
  const ci = ws.i("selIdx", B * kc), cv = ws.f("selVal", B * kc, val);
  const { m, positives, complete } = e.batchCut(idx, val, B, kc, total, packed, ci, cv);
  return { complete, positives, idx: ci.subarray(0, B * m), val: cv.subarray(0, B * m), k: m };
}
