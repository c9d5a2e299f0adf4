// Training state on disk: everything a resume needs to continue exactly (parameters, Adam moments
// and step, tokens-since-fired counters, the input scale, the data position), in training units.
import fs from "node:fs";
import path from "node:path";
import { readSafetensors, writeSafetensors, type Tensor } from "../io/safetensors.ts";
import type { Arr } from "../engine/types.ts";
import { findRun, writeFileAtomic } from "../io/run.ts";
import { ParamSet } from "../sae/params.ts";
import type { SaeModel } from "../sae/variant.ts";
import type { Config } from "../config/schema.ts";
import { loadConfig } from "../config/load.ts";
import { createModel, variantDef } from "../sae/index.ts";
import { SaeError } from "../errors.ts";

export const CHECKPOINT_VERSION = 1;

export interface TrainState {
  p: ParamSet;
  m: ParamSet;
  v: ParamSet;
  sinceFired: Float64Array;
  /** steps done (over all phases) */
  step: number;
  tokens: number;
  adamT: number;
  scale: number;
  /** index of this run's first training batch in the data stream (a fine-tune continues its parent's) */
  batchOffset: number;
  /** sums over the logging interval in progress, so that a resumed run logs the same averages */
  logWindow?: LogWindow;
}

export interface LogWindow { n: number; loss: number; mse: number; sparsity: number; aux: number; gnorm: number }

export interface CheckpointMeta {
  version: number;
  step: number;
  tokens: number;
  adam_t: number;
  scale: number;
  batch_offset: number;
  log_window?: LogWindow;
  layout: { name: string; shape: number[] }[];
}

/** fixedInputBias: the model's constant input bias (SaeModel.fixedInputBias), saved as input_bias */
export function saveCheckpoint(dir: string, s: TrainState, fixedInputBias: Arr | null): string {
  const name = `step-${String(s.step).padStart(7, "0")}`;
  const file = path.join(dir, "checkpoints", `${name}.safetensors`);
  const t = (a: ParamSet) => ({ dtype: "F32" as const, shape: [a.buf.length], data: a.buf as Float32Array });
  const tensors: Record<string, Tensor> = { params: t(s.p), adam_m: t(s.m), adam_v: t(s.v), since_fired: { dtype: "F64", shape: [s.sinceFired.length], data: s.sinceFired } };
  if (fixedInputBias) tensors.input_bias = { dtype: "F32", shape: [fixedInputBias.length], data: Float32Array.from(fixedInputBias) };
  writeSafetensors(file, tensors);
  const meta: CheckpointMeta = { version: CHECKPOINT_VERSION, step: s.step, tokens: s.tokens, adam_t: s.adamT, scale: s.scale, batch_offset: s.batchOffset, ...(s.logWindow && s.logWindow.n > 0 ? { log_window: s.logWindow } : {}), layout: s.p.specs };
  writeFileAtomic(path.join(dir, "checkpoints", `${name}.json`), JSON.stringify(meta, null, 2) + "\n");
  return file;
}

export function latestCheckpoint(dir: string): string | null {
  const d = path.join(dir, "checkpoints");
  if (!fs.existsSync(d)) return null;
  const names = fs.readdirSync(d).filter((f) => /^step-\d+\.json$/.test(f)).sort();
  return names.length ? path.join(d, names[names.length - 1]) : null;
}

/** Reads a checkpoint's metadata and parameters into a ParamSet of the given layout. */
export function readCheckpoint(jsonFile: string, model: SaeModel): { meta: CheckpointMeta; p: ParamSet; fixedInputBias: Float32Array | null; tensors: Record<string, Tensor> } {
  let meta: CheckpointMeta;
  try {
    meta = JSON.parse(fs.readFileSync(jsonFile, "utf8"));
  } catch (e) {
    throw new SaeError("data", `cannot read checkpoint ${jsonFile}: ${(e as Error).message}`);
  }
  if (meta.version !== CHECKPOINT_VERSION) throw new SaeError("data", `${jsonFile}: checkpoint version ${meta.version}, this sae reads version ${CHECKPOINT_VERSION}`, "use the sae version that wrote it");
  const { tensors } = readSafetensors(jsonFile.replace(/\.json$/, ".safetensors"));
  const p = new ParamSet(model.specs);
  const t = tensors.params;
  if (!t || t.data.length !== p.buf.length) throw new SaeError("data", `${jsonFile}: holds ${t?.data.length ?? 0} parameters, the ${model.variant} model of its config needs ${p.buf.length}`, "the checkpoint and config.yaml do not belong together");
  p.buf.set(t.data);
  const ib = tensors.input_bias;
  return { meta, p, fixedInputBias: ib ? Float32Array.from(ib.data) : null, tensors };
}

/** Everything a checkpoint holds, as a TrainState to continue from. */
export function readTrainState(jsonFile: string, model: SaeModel): { state: TrainState; fixedInputBias: Float32Array | null } {
  const { meta, p, fixedInputBias, tensors } = readCheckpoint(jsonFile, model);
  const m = p.like(), v = p.like();
  const sinceFired = new Float64Array(model.dims.H);
  for (const [name, dst] of [["adam_m", m.buf], ["adam_v", v.buf], ["since_fired", sinceFired]] as const) {
    const t = tensors[name];
    if (!t || t.data.length !== dst.length) throw new SaeError("data", `${jsonFile}: tensor ${name} is missing or has the wrong size`, "the checkpoint is damaged; resume from an earlier one");
    dst.set(t.data);
  }
  return { state: { p, m, v, sinceFired, step: meta.step, tokens: meta.tokens, adamT: meta.adam_t, scale: meta.scale, batchOffset: meta.batch_offset, logWindow: meta.log_window }, fixedInputBias };
}

/**
 * The starting weights of a fine-tune: the parent run's last checkpoint, mapped by name into the
 * new model, or converted exactly by the new variant's convertFrom (standard → scaled).
 */
export function loadInitFrom(runArg: string, c: Config, model: SaeModel): { p: ParamSet; scale: number; step: number; note: string; fixedInputBias: Float32Array | null } {
  const dir = findRun(c.runs_dir, runArg);
  const parentConfig = loadConfig(path.join(dir, "config.yaml")).config;
  const ckpt = latestCheckpoint(dir);
  if (!ckpt) throw new SaeError("usage", `${dir} has no checkpoint to start from`, "the parent run must have trained (see `sae runs`)");
  const parentModel = createModel(parentConfig);
  const { meta, p: from, fixedInputBias } = readCheckpoint(ckpt, parentModel);
  if (parentModel.dims.D !== model.dims.D || parentModel.dims.H !== model.dims.H)
    throw new SaeError("config", `init_from ${dir}: its SAE is D=${parentModel.dims.D}, H=${parentModel.dims.H}; this config asks for D=${model.dims.D}, H=${model.dims.H}`, "keep data.d_in and sae.d_sae as in the parent");
  if (parentConfig.sae.apply_b_dec_to_input !== c.sae.apply_b_dec_to_input)
    throw new SaeError("config", `init_from ${dir}: its weights use apply_b_dec_to_input = ${parentConfig.sae.apply_b_dec_to_input}, this config says ${c.sae.apply_b_dec_to_input}`, `set sae.apply_b_dec_to_input: ${parentConfig.sae.apply_b_dec_to_input}`);
  const p = new ParamSet(model.specs);
  const convert = parentModel.variant === model.variant ? null : variantDef(model.variant).convertFrom?.[parentModel.variant];
  if (convert) {
    convert(from, p, model.dims);
  } else {
    for (const { name } of model.specs) {
      if (!from.views[name]) throw new SaeError("config", `init_from ${dir}: a ${parentModel.variant} SAE has no ${name} for the ${model.variant} variant`, "fine-tune with the parent's variant (or one that converts it, e.g. standard → scaled)");
      p.get(name).set(from.get(name));
    }
  }
  return { p, scale: meta.scale, step: meta.batch_offset + meta.step, note: `from ${path.basename(dir)} (${parentModel.variant}) at step ${meta.step}`, fixedInputBias };
}
