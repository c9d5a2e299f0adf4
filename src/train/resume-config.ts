// What a resume may change (docs/training.md#what-a-resume-may-change). A resume continues the
// same run, so the config must be the one its checkpoint was trained with, except for what may
// change between two steps without making the state meaningless: the learning rate and its
// schedule, the logging and checkpoint intervals, the thread count, and the paths of data files
// that moved. Changes come from `sae resume --set` or an edit of config.yaml; anything else is
// refused with the key, both values and the reason.
import { ConfigSchema, type Config } from "../config/schema.ts";
import { SaeError } from "../errors.ts";

/** keys `sae resume --set` takes */
export const RESUME_KEYS = ["train.lr", "train.warmup_steps", "train.decay_fraction", "train.log_every", "train.checkpoint_every", "train.threads"] as const;

/** schedule keys of a phase, which follow train.<key> from the phase in progress on */
const PHASE_KEYS = ["lr", "warmup_steps", "decay_fraction"] as const;

/** files that may have moved (the batches stay the same only if their contents did) */
const PATH_KEYS = ["data.file.path", "data.model.checkpoint", "data.model.tokens", "data.model.tokenizer"];

const MAY_CHANGE = "only the learning rate and its schedule (train.lr, train.warmup_steps, train.decay_fraction, and a phase's lr, warmup_steps, decay_fraction before it ends), train.log_every, train.checkpoint_every and train.threads may change";

/** Refuses a `sae resume --set` of a key a resume cannot change. */
export function checkResumeSets(sets: string[]): void {
  for (const s of sets) {
    const key = s.slice(0, Math.max(0, s.indexOf("="))).trim();
    if (!(RESUME_KEYS as readonly string[]).includes(key)) {
      throw new SaeError("usage", `--set ${s}: a resume continues the run with the weights and optimizer state it trained; ${key || s} cannot change between steps (${MAY_CHANGE})`, `keys sae resume --set takes: ${RESUME_KEYS.join(", ")}; for anything else start a new run from this one's weights: sae finetune RUN --set ${s}`);
    }
  }
}

/**
 * The config to resume with: `c` (config.yaml and --set) checked against `before` (the config
 * the newest checkpoint was trained with; null for checkpoints from before it was recorded).
 * A change of train.lr (warmup_steps, decay_fraction) carries into the phases from the one in
 * progress at `step` on, unless that phase's own value changed too. Returns the changes, one
 * line each ("train.lr: 0.001 → 0.0001").
 */
export function resumeConfig(c: Config, before: Record<string, unknown> | null, step: number, run: string): { config: Config; changes: string[] } {
  if (!before) return { config: c, changes: [] };
  const old = before as unknown as Config;
  const config: Config = structuredClone(c);
  const ends = phaseEnds(config);
  for (const k of PHASE_KEYS) {
    if (config.train[k] === old.train?.[k]) continue;
    config.train.phases.forEach((ph, i) => {
      if (ends[i] > step && ph[k] === old.train?.phases?.[i]?.[k]) (ph as unknown as Record<string, unknown>)[k] = config.train[k];
    });
  }
  const a = flatten(JSON.parse(JSON.stringify(old))), b = flatten(JSON.parse(JSON.stringify(config)));
  const changes: string[] = [], refused: string[] = [];
  for (const key of [...new Set([...Object.keys(a), ...Object.keys(b)])]) {
    if (JSON.stringify(a[key]) === JSON.stringify(b[key]) || key === "runs_dir") continue;
    // a key newer than the checkpoint (a later sae), at its default: the run trained without it,
    // and goes on as it did where the default has changed since (BEFORE_THE_KEY)
    if (!(key in a) && JSON.stringify(b[key]) === JSON.stringify(defaults()[key])) {
      if (key in BEFORE_THE_KEY) setKey(config, key, BEFORE_THE_KEY[key]);
      continue;
    }
    const line = `${key}: ${show(a[key])} → ${show(b[key])}`;
    const phase = /^train\.phases\.(\d+)\.(\w+)$/.exec(key);
    const ok = (RESUME_KEYS as readonly string[]).includes(key) || PATH_KEYS.includes(key) || key === "train.steps"
      || (phase !== null && (PHASE_KEYS as readonly string[]).includes(phase[2]) && ends[Number(phase[1])] > step);
    (ok ? changes : refused).push(line);
  }
  if (refused.length) {
    throw new SaeError("usage", `run ${run}: its config.yaml differs from the config its checkpoint at step ${step} was trained with:\n  ${refused.join("\n  ")}\na resume continues the same run, so ${MAY_CHANGE}`, `undo the edit of config.yaml, or start a new run from this one's weights: sae finetune ${run} --set KEY=VALUE`);
  }
  // train.steps is the phases' sum: it changes only with them
  return { config, changes: changes.filter((l) => !l.startsWith("train.steps:")) };
}

/**
 * Keys whose default has changed since they were added, with the value a run had before the key
 * existed: train.precision came in as fp32 and became auto (bf16 where it runs), which would change
 * an older run's arithmetic at its resume.
 */
const BEFORE_THE_KEY: Record<string, unknown> = { "train.precision": "fp32" };

/** config[a][b]... = value for the dotted key */
function setKey(config: Config, key: string, value: unknown): void {
  const parts = key.split(".");
  let o = config as unknown as Record<string, unknown>;
  for (const p of parts.slice(0, -1)) o = o[p] as Record<string, unknown>;
  o[parts.at(-1)!] = value;
}

let schemaDefaults: Record<string, unknown> | null = null;
/** every key's default, flattened (schema.ts) */
function defaults(): Record<string, unknown> {
  return (schemaDefaults ??= flatten(ConfigSchema.parse({})));
}

/** the global step at which each phase ends */
function phaseEnds(c: Config): number[] {
  let end = 0;
  return c.train.phases.map((p) => (end += p.steps));
}

function flatten(v: unknown, prefix = "", out: Record<string, unknown> = {}): Record<string, unknown> {
  if (v && typeof v === "object") {
    const entries = Array.isArray(v) ? v.map((x, i) => [String(i), x] as const) : Object.entries(v);
    if (entries.length === 0) out[prefix] = v;
    for (const [k, x] of entries) flatten(x, prefix ? `${prefix}.${k}` : k, out);
  } else out[prefix] = v;
  return out;
}

function show(v: unknown): string {
  return v === undefined ? "(unset)" : JSON.stringify(v);
}
