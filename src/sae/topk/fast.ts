// TopK SAE (Gao et al. 2024, arXiv 2406.04093; OpenAI sparse_autoencoder, EleutherAI sparsify),
// with the AuxK auxiliary loss for dead latents (docs/variants.md#topk).
//   P = (X − b_dec) W_encᵀ + b_enc; keep each row's K largest entries, ReLU them; X̂ = F W_dec + b_dec.
//   loss = Σ_d (x − x̂)² (mean over tokens) + α·AuxK
// The code is sparse: decode gathers K decoder rows, and weight gradients touch only the selected
// latents (sparse outer products), so after the encoder GEMM a step costs O(B·K·D).
import type { Arr } from "../../engine/types.ts";
import type { Dims, ForwardResult, SaeModel, StepInput } from "../variant.ts";
import { Workspace, centerInput, residual, standardSpecs } from "../variant.ts";
import { AuxK, codeBackward, type AuxState } from "../sparse.ts";
import type { ParamSet } from "../params.ts";

export interface TopKOptions {
  k: number;
  kAux: number;
  auxCoefficient: number;
  applyBDecToInput: boolean;
  /** test hook: force AuxK's dense or sparse computation */
  auxPath?: AuxK["path"];
  /** subtract this constant instead of b_dec (see SaeModel.fixedInputBias) */
  fixedInputBias?: Arr | null;
}

/** rows of the batch per encoder block (see forward) */
export let ENCODER_BLOCK_ROWS = 2048;
export function setEncoderBlockRows(n: number): void {
  ENCODER_BLOCK_ROWS = n;
}

/** what backward needs: the centred input, the residual X̂ − X, the code, AuxK's state */
interface TopKState { Xc: Arr; E: Arr; idx: Int32Array; val: Arr; aux: AuxState | null }

export function createTopK(dims: Dims, opt: TopKOptions): SaeModel<TopKState> {
  const { D, H } = dims;
  const K = opt.k;
  const ws = new Workspace();
  const auxk = new AuxK(dims, opt.kAux, opt.auxCoefficient, ws);
  if (opt.auxPath) auxk.path = opt.auxPath;

  return {
    variant: "topk",
    dims,
    workspaceBytes: () => ws.bytes(),
    specs: standardSpecs(dims),
    unitNormDecoder: true,
    applyBDecToInput: opt.applyBDecToInput,
    writesGradients: ["W_enc", "W_dec"],
    fixedInputBias: opt.fixedInputBias ?? null,

    forward({ e, p, X, B, dead, auxTarget }): ForwardResult<TopKState> {
      const Wenc = p.get("W_enc"), bEnc = p.get("b_enc"), Wdec = p.get("W_dec"), bDec = p.get("b_dec");
      const Xc = centerInput(e, X, opt.fixedInputBias ?? bDec, opt.applyBDecToInput, B, D, ws.f("Xc", B * D, X));
      const idx = ws.i("idx", B * K);
      const val = ws.f("val", B * K, X);
      auxk.begin(e, B, dead, Xc, Wenc, true);
      // Encoder GEMM and selection in blocks of rows, so the dense pre-activations [rows, H] are
      // still in cache when the top-k reads them, and never exist for the whole batch.
      const R = Math.min(B, ENCODER_BLOCK_ROWS);
      const P = ws.f("P", R * H, X); // pre-activations without b_enc  [R, H]
      for (let r0 = 0; r0 < B; r0 += R) {
        const rows = Math.min(R, B - r0);
        const Pb = P.subarray(0, rows * H);
        e.gemm(false, true, rows, H, D, 1, Xc.subarray(r0 * D, (r0 + rows) * D), Wenc, 0, Pb);
        const aux = auxk.picks(r0, rows); // AuxK's dense path: its dead latents' columns, copied by the top-k
        e.topkRows(Pb, bEnc, null, rows, H, K, idx.subarray(r0 * K, (r0 + rows) * K), val.subarray(r0 * K, (r0 + rows) * K), aux?.pick, aux?.picked);
        auxk.select(e, Pb, bEnc, r0, rows);
      }
      const Xhat = ws.f("Xhat", B * D, X);
      e.gatherRows(idx, val, B, K, Wdec, H, D, bDec, Xhat);
      const E = ws.f("E", B * D, X);
      const mse = residual(e, Xhat, X, E) / B;
      const { loss: aux, state: auxState } = auxk.finish(e, bEnc, Wdec, E, auxTarget);
      return { terms: { loss: mse + auxk.alpha * aux, mse, sparsity: 0, aux }, code: { kind: "sparse", k: K, idx, val }, Xhat, state: { Xc, E, idx, val, aux: auxState } };
    },

    backward({ e, p, B }: StepInput, state: TopKState, g: ParamSet): number {
      return codeBackward(e, ws, auxk, dims, p, g, B, { ...state, k: K }, opt.applyBDecToInput && !opt.fixedInputBias);
    },
  };
}
