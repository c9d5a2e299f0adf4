// Training state on disk: everything a resume needs to continue exactly (parameters, Adam moments
// and step, tokens-since-fired counters, the input scale), in training units.
import fs from "node:fs";
import path from "node:path";
import { readSafetensors, writeSafetensors } from "../io/safetensors.ts";
import { writeFileAtomic } from "../io/run.ts";
import type { ParamSet } from "../sae/params.ts";
import type { Config } from "../config/schema.ts";
import { SaeError } from "../errors.ts";

export const CHECKPOINT_VERSION = 1;

export interface TrainState {
  p: ParamSet;
  m: ParamSet;
  v: ParamSet;
  sinceFired: Float64Array;
  /** next step to run */
  step: number;
  tokens: number;
  adamT: number;
  scale: number;
}

export function saveCheckpoint(dir: string, s: TrainState): string {
  const name = `step-${String(s.step).padStart(7, "0")}`;
  const file = path.join(dir, "checkpoints", `${name}.safetensors`);
  const t = (a: ParamSet) => ({ dtype: "F32" as const, shape: [a.buf.length], data: a.buf as Float32Array });
  writeSafetensors(file, { params: t(s.p), adam_m: t(s.m), adam_v: t(s.v), since_fired: { dtype: "F64", shape: [s.sinceFired.length], data: s.sinceFired } });
  const meta = { version: CHECKPOINT_VERSION, step: s.step, tokens: s.tokens, adam_t: s.adamT, scale: s.scale, layout: s.p.specs };
  writeFileAtomic(path.join(dir, "checkpoints", `${name}.json`), JSON.stringify(meta, null, 2) + "\n");
  return file;
}

export function latestCheckpoint(dir: string): string | null {
  const d = path.join(dir, "checkpoints");
  if (!fs.existsSync(d)) return null;
  const names = fs.readdirSync(d).filter((f) => /^step-\d+\.json$/.test(f)).sort();
  return names.length ? path.join(d, names[names.length - 1]) : null;
}

export function loadCheckpoint(jsonFile: string, s: Omit<TrainState, "step" | "tokens" | "adamT" | "scale">, c: Config): Pick<TrainState, "step" | "tokens" | "adamT" | "scale"> {
  const meta = JSON.parse(fs.readFileSync(jsonFile, "utf8"));
  if (meta.version !== CHECKPOINT_VERSION) throw new SaeError("data", `${jsonFile}: checkpoint version ${meta.version}, this sae reads version ${CHECKPOINT_VERSION}`, "use the sae version that wrote it");
  const { tensors } = readSafetensors(jsonFile.replace(/\.json$/, ".safetensors"));
  for (const [name, dst] of [["params", s.p.buf], ["adam_m", s.m.buf], ["adam_v", s.v.buf], ["since_fired", s.sinceFired]] as const) {
    const t = tensors[name];
    if (!t || t.data.length !== dst.length) throw new SaeError("data", `${jsonFile}: tensor ${name} is missing or has ${t?.data.length} values, expected ${dst.length} (d_in ${c.data.d_in}, d_sae ${c.sae.d_sae})`, "the checkpoint belongs to a different config");
    dst.set(t.data);
  }
  return { step: meta.step, tokens: meta.tokens, adamT: meta.adam_t, scale: meta.scale };
}
