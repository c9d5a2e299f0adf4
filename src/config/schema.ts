// The experiment schema: every key, its type, range and default, in one place. YAML files list
// only what differs (nanoGPT-style deltas); `resolveConfig` fills variant-dependent defaults, and
// the fully resolved config is written to runs/<id>/config.yaml. Unknown keys are errors.
import { z } from "zod";
import { DEFAULT_VARIANT, VARIANTS, VARIANT_NAMES, variantDef, variantKeys } from "../sae/index.ts";
import type { SaeSettings } from "../sae/variant.ts";

const FLAVOUR_NAMES = [...new Set(VARIANTS.flatMap((v) => v.flavours ?? []))] as [string, ...string[]];

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

/** An activation file: .npy, .safetensors, or a sharded folder (its manifest.json) */
export const FileSchema = z
  .object({
    /** a .npy or .safetensors file, or a folder holding manifest.json (relative to the config file) */
    path: z.string().min(1),
    /** the tensor to read from a .safetensors file with several */
    tensor: z.string().min(1).optional(),
    /** auto = the file's own; bfloat16 (or bf16) reads a uint16 .npy as bfloat16 bits; f32, f16 are accepted too */
    dtype: z.enum(["auto", "float32", "float16", "bfloat16", "f32", "f16", "bf16"]).default("auto"),
  })
  .strict();

export const SITES = ["resid_pre", "attn_out", "mlp_out", "resid_post"] as const;

/** Activations harvested on the fly from a llama2.c checkpoint */
export const ModelSourceSchema = z
  .object({
    /** a llama2.c .bin checkpoint (relative to the config file; $VAR and ${VAR:-default} are expanded) */
    checkpoint: z.string().min(1),
    /** block index, from 0 */
    layer: int().min(0),
    /** resid_pre (entering the block), attn_out, mlp_out, resid_post (leaving it) */
    site: z.enum(SITES).default("resid_pre"),
    /** sequences in the dataset, training and held-out together (default: all of a token file, else 1024) */
    sequences: int().min(1).optional(),
    /** tokens per sequence; default: the model's context length (or a 2-D token file's rows, when shorter) */
    context_size: int().min(2).optional(),
    /** sampling temperature for sequences the model writes itself (0 = greedy) */
    temperature: z.number().min(0).default(1),
    /** token ids to run instead of sampling: .npy [sequences, positions] or a uint16 .bin */
    tokens: z.string().min(1).optional(),
    /** llama2.c tokenizer file, to show tokens as text */
    tokenizer: z.string().min(1).optional(),
  })
  .strict();

export const DataSchema = z
  .object({
    /** synthetic (known ground truth), file (activation files), model (harvest on the fly), mnist (784-pixel digits) */
    source: z.enum(["synthetic", "file", "model", "mnist"]).default("synthetic"),
    /** input dimension D; for synthetic data, default 256; for the others it is read from the data (and checked when given) */
    d_in: int().min(1).optional(),
    synthetic: SyntheticSchema.default(SyntheticSchema.parse({})),
    file: FileSchema.optional(),
    model: ModelSourceSchema.optional(),
    /** positions dropped from the start of every sequence; default 1 when sequences start with BOS (its activations are outliers), else 0 */
    skip_positions: int().min(0).optional(),
    /** memory for the shuffle buffer of file and model data: the data path stays within it however large the dataset */
    shuffle_buffer_mb: pos().default(256),
    /** held-out tokens for evaluation (drawn from a stream training never sees) */
    eval_tokens: int().min(1).default(16384),
    /** input scaling (docs/variants.md#input-normalisation): unit_mean_squared_norm → E‖x‖² = 1 (dictionary_learning,
     *  Gemma Scope); sqrt_d_mean_norm → E‖x‖ = √D (SAELens expected_average_only_in); none */
    normalize: z.enum(["unit_mean_squared_norm", "sqrt_d_mean_norm", "none"]).default("unit_mean_squared_norm"),
    /** tokens used once, before training, to estimate the scaling factor and init b_dec */
    norm_estimate_tokens: int().min(1).default(32768),
  })
  .strict();

export const SaeSchema = z
  .object({
    /** the SAE variant: see src/sae/index.ts and docs/variants.md */
    variant: z.enum(VARIANT_NAMES).default(DEFAULT_VARIANT),
    /** latents H; when unset, expansion_factor × d_in */
    d_sae: int().min(1).optional(),
    expansion_factor: pos().default(8),
    /** the variant's flavour (docs/variants.md); default: the variant's first */
    flavour: z.enum(FLAVOUR_NAMES).optional(),
    /** subtract b_dec from the encoder input ("pre-encoder bias"); default true unless the variant says otherwise */
    apply_b_dec_to_input: z.boolean().optional(),
    /** b_dec init from the data sample: geometric_median (Weiszfeld), mean, or zeros */
    b_dec_init: z.enum(["geometric_median", "mean", "zeros"]).default("geometric_median"),
    /** norm of each encoder row at init (W_enc = W_decᵀ directions); default: the variant's (0.1 for
     *  the ReLU + penalty variants, as dictionary_learning and SAELens; 1 otherwise) */
    init_norm: pos().optional(),
    // and each variant's own keys (src/sae/<name>/index.ts)
    ...variantKeys(),
  })
  .strict();

export const PhaseSchema = z
  .object({
    name: z.string().regex(/^[A-Za-z0-9_.-]+$/, "use letters, digits, '.', '_' or '-'").optional(),
    /** length in optimiser steps (or give tokens) */
    steps: int().min(1).optional(),
    /** length in tokens, rounded up to whole batches */
    tokens: int().min(1).optional(),
    /** defaults: the train.* values */
    lr: pos().optional(),
    warmup_steps: int().min(0).optional(),
    decay_fraction: z.number().min(0).max(1).optional(),
    sparsity_warmup_steps: int().min(0).optional(),
    /** the penalty's coefficient in this phase (0 removes it); default: the variant's coefficient */
    sparsity_coefficient: z.number().min(0).nullable().optional(),
    /** parameters or groups of them (encoder, decoder, scale, threshold) that do not change in this
     *  phase; checked against the variant's parameters (docs/training.md#freezing) */
    freeze: z.array(z.string().min(1)).default([]),
    /** train only what this fine-tuning mode trains: `encoder` (every variant: the decoder frozen),
     *  or one of the variant's own modes (scaled: scale, unrotated_decoder, decoder) */
    mode: z.string().min(1).nullable().optional(),
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
    /** native: the CPU engine; tfjs: the variant's equations under tfjs autodiff on the best tfjs backend
     *  (docs/tfjs.md); auto: tfjs when @tensorflow/tfjs-node-gpu finds a GPU, else native */
    engine: z.enum(["auto", "native", "tfjs"]).default("auto"),
    /** GEMM operands in bfloat16 (float32 accumulation, master weights, optimizer, loss, files); auto: bf16 where the native
     *  engine has it (docs/engine.md#bfloat16) */
    precision: z.enum(["fp32", "bf16", "auto"]).default("auto"),
    /** training phases run in order, each with a fresh optimizer state; default: one phase of train.steps */
    phases: z.array(PhaseSchema).min(1).optional(),
  })
  .strict();

/** How the downstream loss treats BOS and other special tokens (docs/downstream.md). */
export const DOWNSTREAM_CONVENTIONS = ["sae", "saelens", "saebench"] as const;

export const EvalSchema = z
  .object({
    /** sae: the first data.skip_positions positions (BOS) are left clean and unscored; saelens: as
     *  SAELens's evals (special tokens by id: neither spliced nor scored; zero ablation everywhere);
     *  saebench: as SAEBench's core eval (spliced everywhere, special tokens not scored) */
    downstream_convention: z.enum(DOWNSTREAM_CONVENTIONS).default("sae"),
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
    eval: EvalSchema.default(EvalSchema.parse({})),
    /** start from another run's final training state (its last checkpoint) instead of a fresh init */
    init_from: z.string().min(1).optional(),
  })
  .strict();

export type RawConfig = z.infer<typeof ConfigSchema>;

/** A config with every default filled in, variant-dependent ones included. */
export interface Phase {
  name: string;
  steps: number;
  lr: number;
  warmup_steps: number;
  decay_fraction: number;
  sparsity_warmup_steps: number;
  /** null: the variant's own coefficient */
  sparsity_coefficient: number | null;
  freeze: string[];
  mode: string | null;
}

export interface Config extends RawConfig {
  data: RawConfig["data"] & { d_in: number };
  sae: RawConfig["sae"] & SaeSettings;
  train: Omit<RawConfig["train"], "phases"> & { lr: number; phases: Phase[] };
}

/** Fills the defaults; dataD is the data's own width (read from the files or model), null for synthetic data. */
export function resolveConfig(raw: RawConfig, dataD: number | null = null): Config {
  const s = raw.sae;
  const v = variantDef(s.variant);
  const D = dataD ?? raw.data.d_in ?? 256;
  const H = s.d_sae ?? Math.round(s.expansion_factor * D);
  const sae = {
    ...s,
    flavour: s.flavour ?? v.flavours?.[0],
    apply_b_dec_to_input: s.apply_b_dec_to_input ?? v.defaults?.apply_b_dec_to_input ?? true,
    d_sae: H,
    expansion_factor: H / D,
    init_norm: s.init_norm ?? v.defaults?.init_norm ?? 1,
  } as Config["sae"];
  Object.assign(sae, v.resolve?.(sae, D));
  return { ...raw, data: { ...raw.data, d_in: D }, sae, train: resolveTrain(raw.train, v.defaultLr(H)) };
}

function resolveTrain(t: RawConfig["train"], defaultLr: number): Config["train"] {
  const lr = t.lr ?? defaultLr;
  const raw = t.phases ?? [{ name: "train", steps: t.steps, freeze: [] }];
  const phases: Phase[] = raw.map((p, i) => ({
    name: p.name ?? (raw.length === 1 ? "train" : `phase${i + 1}`),
    steps: p.steps ?? Math.ceil((p.tokens ?? 0) / t.batch_size),
    lr: p.lr ?? lr,
    warmup_steps: p.warmup_steps ?? t.warmup_steps,
    decay_fraction: p.decay_fraction ?? t.decay_fraction,
    sparsity_warmup_steps: p.sparsity_warmup_steps ?? t.sparsity_warmup_steps,
    sparsity_coefficient: p.sparsity_coefficient ?? null,
    freeze: p.freeze ?? [],
    mode: p.mode ?? null,
  }));
  return { ...t, lr, phases, steps: phases.reduce((n, p) => n + p.steps, 0) };
}
