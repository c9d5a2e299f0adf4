// The experiment schema: every key, its type, range and default, in one place. YAML files list
// only what differs (nanoGPT-style deltas); `resolveConfig` fills variant-dependent defaults, and
// the fully resolved config is written to runs/<id>/config.yaml. Unknown keys are errors.
import { z } from "zod";

const int = () => z.number().int();
const pos = () => z.number().positive();

export const SyntheticSchema = z
  .object({
    /** ground-truth features G (unit-norm Gaussian directions in R^D) */
    n_features: int().min(1).default(512),
    /** expected number of active features per token; firing probabilities are rescaled to it */
    mean_active: pos().default(5),
    /** feature i fires with probability ∝ decay^i (HoagyC/sparse_coding's power-law profile); 1 = uniform */
    decay: z.number().gt(0).max(1).default(0.99),
    /** 0 = independent firing; in (0,1): features share a Gaussian factor (copula) with this correlation */
    correlation: z.number().min(0).lt(1).default(0),
    /** active coefficients ~ U[magnitude_min, magnitude_max] */
    magnitude_min: z.number().min(0).default(0),
    magnitude_max: pos().default(1),
    /** std of isotropic Gaussian noise added to each dimension */
    noise: z.number().min(0).default(0),
  })
  .strict();

export const DataSchema = z
  .object({
    source: z.enum(["synthetic"]).default("synthetic"),
    /** input dimension D */
    d_in: int().min(1).default(256),
    synthetic: SyntheticSchema.default(SyntheticSchema.parse({})),
    /** held-out tokens for evaluation (drawn from a stream training never sees) */
    eval_tokens: int().min(1).default(16384),
    /** input scaling (sae-variants.md §1.1): unit_mean_squared_norm → E‖x‖² = 1 (dictionary_learning,
     *  Gemma Scope); sqrt_d_mean_norm → E‖x‖ = √D (SAELens expected_average_only_in); none */
    normalize: z.enum(["unit_mean_squared_norm", "sqrt_d_mean_norm", "none"]).default("unit_mean_squared_norm"),
    /** tokens used once, before training, to estimate the scaling factor and init b_dec */
    norm_estimate_tokens: int().min(1).default(32768),
  })
  .strict();

export const VARIANTS = ["standard", "topk"] as const;

export const SaeSchema = z
  .object({
    variant: z.enum(VARIANTS).default("topk"),
    /** latents H; when unset, expansion_factor × d_in */
    d_sae: int().min(1).optional(),
    expansion_factor: pos().default(8),
    /** standard: constrained = unit-norm decoder, λΣf (Bricken et al. 2023); april = free decoder, λΣf‖d‖ (Anthropic, Apr 2024) */
    flavour: z.enum(["constrained", "april"]).default("constrained"),
    /** standard: λ, relative to Σ_d (x − x̂)² per token */
    l1_coefficient: z.number().min(0).default(0.04),
    /** topk: latents kept per token */
    k: int().min(1).default(32),
    /** topk: AuxK latents per token (capped at the number of dead latents) */
    k_aux: int().min(1).optional(),
    /** topk: α of the AuxK loss; 0 turns AuxK off */
    aux_coefficient: z.number().min(0).default(1 / 32),
    /** subtract b_dec from the encoder input ("pre-encoder bias") */
    apply_b_dec_to_input: z.boolean().default(true),
    /** b_dec init from the data sample: geometric_median (Weiszfeld), mean, or zeros */
    b_dec_init: z.enum(["geometric_median", "mean", "zeros"]).default("geometric_median"),
    /** norm of each encoder row at init (W_enc = W_decᵀ directions); default 1 for topk, 0.1 for standard */
    init_norm: pos().optional(),
  })
  .strict();

export const TrainSchema = z
  .object({
    steps: int().min(1).default(2000),
    batch_size: int().min(1).default(4096),
    /** Adam learning rate; default 2e-4/√(H/16384) (dictionary_learning, sparsify) for topk, 1e-3 for standard */
    lr: pos().optional(),
    beta1: z.number().min(0).lt(1).default(0.9),
    beta2: z.number().min(0).lt(1).default(0.999),
    eps: pos().default(1e-8),
    /** linear LR warm-up from 0 */
    warmup_steps: int().min(0).default(100),
    /** fraction of the run, at its end, over which the LR decays linearly to 0 */
    decay_fraction: z.number().min(0).max(1).default(0.2),
    /** linear warm-up of the sparsity coefficient from 0 (penalty variants) */
    sparsity_warmup_steps: int().min(0).default(500),
    /** clip the global gradient L2 norm; 0 = off */
    grad_clip: z.number().min(0).default(1),
    /** a latent is dead after this many tokens without firing (AuxK, dead fraction in the log) */
    dead_tokens_threshold: int().min(1).default(1_000_000),
    log_every: int().min(1).default(50),
    /** write a resumable checkpoint every N steps; 0 = only at the end */
    checkpoint_every: int().min(0).default(0),
    /** CPU threads for the native engine; default all cores */
    threads: int().min(1).optional(),
  })
  .strict();

export const ConfigSchema = z
  .object({
    /** a label that goes into the run id */
    name: z.string().regex(/^[A-Za-z0-9_.-]+$/, "use letters, digits, '.', '_' or '-'").default("run"),
    seed: int().min(0).default(0),
    runs_dir: z.string().min(1).default("runs"),
    data: DataSchema.default(DataSchema.parse({})),
    sae: SaeSchema.default(SaeSchema.parse({})),
    train: TrainSchema.default(TrainSchema.parse({})),
  })
  .strict();

export type RawConfig = z.infer<typeof ConfigSchema>;

/** A config with every default filled in, variant-dependent ones included. */
export interface Config extends RawConfig {
  sae: RawConfig["sae"] & { d_sae: number; k_aux: number; init_norm: number };
  train: RawConfig["train"] & { lr: number };
}

/** Keys that only one variant reads; setting them for another variant earns a warning. */
export const VARIANT_KEYS: Record<string, readonly string[]> = {
  standard: ["flavour", "l1_coefficient"],
  topk: ["k", "k_aux", "aux_coefficient"],
};

export function resolveConfig(raw: RawConfig): Config {
  const s = raw.sae;
  const H = s.d_sae ?? Math.round(s.expansion_factor * raw.data.d_in);
  const topk = s.variant === "topk";
  return {
    ...raw,
    sae: {
      ...s,
      d_sae: H,
      expansion_factor: H / raw.data.d_in,
      k_aux: s.k_aux ?? Math.max(1, Math.floor(raw.data.d_in / 2)),
      init_norm: s.init_norm ?? (topk ? 1 : 0.1),
    },
    train: { ...raw.train, lr: raw.train.lr ?? (topk ? 2e-4 / Math.sqrt(H / 16384) : 1e-3) },
  };
}
