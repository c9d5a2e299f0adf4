// Training state on disk: everything a resume needs to continue exactly (parameters, Adam moments
// and step, tokens-since-fired counters, the input scale, the data position), in training units.
import fs from "node:fs";
import crypto from "node:crypto";
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
import { count } from "../text.ts";

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
  /** SHA-256 of the .safetensors file's bytes, checked before a resume (older checkpoints lack it) */
  sha256?: string;
  /** the resolved config the state was trained with, so that a resume sees what changed (older checkpoints lack it) */
  config?: Record<string, unknown>;
}

/** the file name of step N's checkpoint (padded for listings; read back by number, so steps past 9,999,999 sort right) */
export function checkpointName(step: number): string {
  return `step-${String(step).padStart(7, "0")}`;
}

/**
 * fixedInputBias: the model's constant input bias (SaeModel.fixedInputBias), saved as input_bias.
 * The tensors' file carries the counters in its metadata too, and the .json the file's SHA-256,
 * so that a .json paired with other tensors (or altered bytes) is caught before a resume.
 */
export function saveCheckpoint(dir: string, s: TrainState, fixedInputBias: Arr | null, config?: Config): string {
  const name = checkpointName(s.step);
  const file = path.join(dir, "checkpoints", `${name}.safetensors`);
  const t = (a: ParamSet) => ({ dtype: "F32" as const, shape: [a.buf.length], data: a.buf as Float32Array });
  const tensors: Record<string, Tensor> = { params: t(s.p), adam_m: t(s.m), adam_v: t(s.v), since_fired: { dtype: "F64", shape: [s.sinceFired.length], data: s.sinceFired } };
  if (fixedInputBias) tensors.input_bias = { dtype: "F32", shape: [fixedInputBias.length], data: Float32Array.from(fixedInputBias) };
  const counters = { step: String(s.step), tokens: String(s.tokens), adam_t: String(s.adamT), batch_offset: String(s.batchOffset) };
  const sha256 = writeSafetensors(file, tensors, counters);
  const meta: CheckpointMeta = {
    version: CHECKPOINT_VERSION, step: s.step, tokens: s.tokens, adam_t: s.adamT, scale: s.scale, batch_offset: s.batchOffset,
    ...(s.logWindow && s.logWindow.n > 0 ? { log_window: s.logWindow } : {}), layout: s.p.specs, sha256,
    ...(config ? { config: JSON.parse(JSON.stringify(config)) } : {}),
  };
  writeFileAtomic(path.join(dir, "checkpoints", `${name}.json`), JSON.stringify(meta, null, 2) + "\n");
  return file;
}

/** the run's checkpoints (their .json files), oldest first by step number */
export function listCheckpoints(dir: string): { step: number; file: string }[] {
  const d = path.join(dir, "checkpoints");
  let names: string[];
  try {
    names = fs.readdirSync(d);
  } catch {
    return [];
  }
  return names.flatMap((f) => {
    const m = /^step-(\d+)\.json$/.exec(f);
    return m ? [{ step: Number(m[1]), file: path.join(d, f) }] : [];
  }).sort((a, b) => a.step - b.step);
}

export function latestCheckpoint(dir: string): string | null {
  return listCheckpoints(dir).at(-1)?.file ?? null;
}

/** The .json of a checkpoint, checked field by field. */
function readMeta(jsonFile: string): CheckpointMeta {
  const bad = (what: string) => new SaeError("data", `checkpoint ${jsonFile} ${what}`);
  let meta: unknown;
  try {
    meta = JSON.parse(fs.readFileSync(jsonFile, "utf8"));
  } catch (e) {
    throw bad(`cannot be read: ${(e as NodeJS.ErrnoException).code ?? `not valid JSON (${(e as Error).message})`}`);
  }
  if (!meta || typeof meta !== "object" || Array.isArray(meta)) throw bad(`holds ${JSON.stringify(meta)}, not a checkpoint's fields`);
  const m = meta as CheckpointMeta;
  if (m.version !== CHECKPOINT_VERSION) throw bad(`has version ${JSON.stringify(m.version)}; this sae reads version ${CHECKPOINT_VERSION}`);
  for (const k of ["step", "tokens", "adam_t", "batch_offset"] as const) if (!Number.isSafeInteger(m[k]) || m[k] < 0) throw bad(`has ${k} ${JSON.stringify(m[k])}; expected an integer >= 0`);
  if (!Number.isFinite(m.scale) || m.scale <= 0) throw bad(`has scale ${JSON.stringify(m.scale)}; expected a positive number`);
  if (m.log_window !== undefined && (typeof m.log_window !== "object" || m.log_window === null || !Object.values(m.log_window).every(Number.isFinite))) throw bad("has a log_window that is not a set of numbers");
  const named = /step-(\d+)\.json$/.exec(path.basename(jsonFile));
  if (named && Number(named[1]) !== m.step) throw bad(`says step ${m.step}, its name says step ${Number(named[1])}`);
  return m;
}

/** Reads a checkpoint's metadata and parameters into a ParamSet of the given layout, after checking the tensors' checksum and counters. */
export function readCheckpoint(jsonFile: string, model: SaeModel): { meta: CheckpointMeta; p: ParamSet; fixedInputBias: Float32Array | null; tensors: Record<string, Tensor> } {
  const meta = readMeta(jsonFile);
  const stFile = jsonFile.replace(/\.json$/, ".safetensors");
  const { tensors, metadata, bytes } = readSafetensors(stFile);
  if (meta.sha256 !== undefined) {
    const sum = crypto.createHash("sha256").update(bytes).digest("hex");
    if (sum !== meta.sha256) throw new SaeError("data", `checkpoint ${stFile} does not match its checksum (SHA-256 ${sum.slice(0, 12)}…, ${path.basename(jsonFile)} records ${String(meta.sha256).slice(0, 12)}…): its bytes changed after it was written`);
  }
  for (const k of ["step", "tokens", "adam_t", "batch_offset"] as const) {
    if (metadata[k] !== undefined && Number(metadata[k]) !== meta[k]) throw new SaeError("data", `checkpoint ${jsonFile} says ${k} ${meta[k]}, its tensors (${path.basename(stFile)}) were saved at ${k} ${metadata[k]}`);
  }
  const p = new ParamSet(model.specs);
  const t = tensors.params;
  if (!t || t.data.length !== p.buf.length) throw new SaeError("data", `${jsonFile}: holds ${t?.data.length ?? 0} parameters, the ${model.variant} model of its config needs ${p.buf.length}`, "the checkpoint and config.yaml do not belong together");
  p.buf.set(t.data);
  const ib = tensors.input_bias;
  if (ib && ib.data.length !== model.dims.D) throw new SaeError("data", `${jsonFile}: input_bias holds ${ib.data.length} values, expected D = ${model.dims.D}`);
  return { meta, p, fixedInputBias: ib ? Float32Array.from(ib.data) : null, tensors };
}

/** Everything a checkpoint holds, as a TrainState to continue from. */
export function readTrainState(jsonFile: string, model: SaeModel): { state: TrainState; fixedInputBias: Float32Array | null; meta: CheckpointMeta } {
  const { meta, p, fixedInputBias, tensors } = readCheckpoint(jsonFile, model);
  const m = p.like(), v = p.like();
  const sinceFired = new Float64Array(model.dims.H);
  for (const [name, dst] of [["adam_m", m.buf], ["adam_v", v.buf], ["since_fired", sinceFired]] as const) {
    const t = tensors[name];
    if (!t || t.data.length !== dst.length) throw new SaeError("data", `${jsonFile}: tensor ${name} is missing or has the wrong size`);
    dst.set(t.data);
  }
  return { state: { p, m, v, sinceFired, step: meta.step, tokens: meta.tokens, adamT: meta.adam_t, scale: meta.scale, batchOffset: meta.batch_offset, logWindow: meta.log_window }, fixedInputBias, meta };
}

/**
 * The newest checkpoint of a run that reads back whole (checksum, counters, sizes): a damaged
 * newest one is passed over with a warning naming the reason. null when the run has none at all;
 * an error listing the reasons when none is good.
 */
export function newestGoodCheckpoint(dir: string, model: SaeModel, warn: (line: string) => void): ({ file: string } & ReturnType<typeof readTrainState>) | null {
  const all = listCheckpoints(dir).reverse();
  if (all.length === 0) return null;
  const reasons: string[] = [];
  for (const [i, { file }] of all.entries()) {
    try {
      const got = readTrainState(file, model);
      if (i > 0) warn(`warning: resuming from ${path.basename(file)}, the newest checkpoint that reads back whole (${i} newer ${i === 1 ? "one is" : "ones are"} damaged)`);
      return { file, ...got };
    } catch (err) {
      if (!(err instanceof SaeError)) throw err;
      reasons.push(err.message);
      warn(`warning: ${path.basename(file, ".json")} is damaged and is passed over: ${err.message}`);
    }
  }
  throw new SaeError("usage", `${dir}: none of its ${count(all.length, "checkpoint")} reads back whole:\n  ${reasons.join("\n  ")}`, `move the damaged checkpoints (checkpoints/step-*.json and .safetensors) out of the run: \`sae resume\` then trains it again from step 0, which gives the same result`);
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
  let read: ReturnType<typeof readCheckpoint>;
  try {
    read = readCheckpoint(ckpt, parentModel);
  } catch (err) {
    // an earlier checkpoint holds other weights than the parent's final ones: no fallback here
    if (err instanceof SaeError) throw new SaeError("usage", `init_from ${dir}: its last checkpoint is damaged: ${err.message}`, "fine-tune another run, or train the parent again");
    throw err;
  }
  const { meta, p: from, fixedInputBias } = read;
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
