// The config of a fine-tune: a new run that starts from a parent run's last checkpoint with the
// penalty off (unless given) and parts frozen, as `sae finetune` and a sweep's fine-tune groups make it.
import path from "node:path";
import type { Config } from "../config/schema.ts";
import { VARIANTS, keyReaders, variantDef } from "../sae/index.ts";
import { freezeNames, modeNames, modeTrains } from "../sae/freeze.ts";
import { SaeError } from "../errors.ts";

/** every fine-tuning mode of some variant */
export const ALL_MODES = [...new Set(VARIANTS.flatMap(modeNames))];

export interface FinetuneOptions {
  freeze?: string[];
  mode?: string;
  /** default: a tenth of the parent's steps */
  steps?: number;
  lr?: number;
  /** sparsity coefficient during the fine-tune; default 0 (off) */
  penalty?: number;
  runsDir: string;
  /** how the options were given, for messages (default "--freeze", "--mode") */
  names?: { freeze: string; mode: string };
}

/** The raw config (to validate with configFromObject) of a fine-tune of the run in parentDir, whose resolved config is parent. */
export function finetuneConfig(parent: Config, parentDir: string, o: FinetuneOptions): Record<string, unknown> {
  const names = o.names ?? { freeze: "--freeze", mode: "--mode" };
  const freeze = o.freeze ?? [];
  const known = freezeNames(specsOf(parent, parent.sae.variant));
  for (const g of freeze) {
    if (!known.includes(g)) throw new SaeError("usage", `${names.freeze} ${freeze.join(",")}: a ${parent.sae.variant} SAE has no group or parameter "${g}"`, `freeze any of: ${known.join(", ")}`);
  }
  if (freeze.length && o.mode) throw new SaeError("usage", `${names.freeze} and ${names.mode} both say what trains; give one`);
  const parentSteps = parent.train.phases.reduce((n, p) => n + p.steps, 0);
  const steps = o.steps ?? Math.max(1, Math.round(parentSteps / 10));
  const variant = o.mode ? variantFor(parent, o.mode, names.mode) : parent.sae.variant;
  const phase = { name: "finetune", steps, sparsity_coefficient: o.penalty ?? 0, warmup_steps: 0, ...(o.lr ? { lr: o.lr } : {}), ...(freeze.length ? { freeze } : {}), ...(o.mode ? { mode: o.mode } : {}) };
  const { steps: _s, ...train } = parent.train;
  return {
    ...parent,
    name: `${parent.name}-ft`,
    runs_dir: o.runsDir,
    init_from: path.resolve(parentDir),
    sae: keysReadBy(variant, { ...parent.sae, variant }),
    train: { ...train, phases: [phase] },
  };
}

function specsOf(c: Config, variant: string) {
  return variantDef(variant).specs({ D: c.data.d_in, H: c.sae.d_sae }, c.sae);
}

/**
 * The variant a fine-tune with this mode trains: the parent's own when it has the mode, else one
 * that has it and converts the parent's parameters exactly (a standard run becomes scaled).
 */
function variantFor(parent: Config, mode: string, name: string): string {
  const own = parent.sae.variant;
  if (modeTrains(variantDef(own), specsOf(parent, own), mode)) return own;
  const to = VARIANTS.find((v) => v.convertFrom?.[own] && modeTrains(v, specsOf(parent, v.name), mode));
  if (to) return to.name;
  throw new SaeError("usage", `${name} ${mode}: a ${own} run has no such mode (its modes: ${modeNames(variantDef(own)).join(", ")})`, "use freeze with parameter groups instead (see sae finetune --help)");
}

/** The parent's config.yaml spells out every sae key; the ones this variant ignores would each warn "is ignored" as if the user had set them. */
function keysReadBy(variant: string, sae: Record<string, unknown>): Record<string, unknown> {
  const readers = keyReaders();
  return Object.fromEntries(Object.entries(sae).filter(([k]) => !(k in readers) || readers[k].includes(variant)));
}
