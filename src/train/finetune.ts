// The config of a fine-tune: a new run that starts from a parent run's last checkpoint with the
// penalty off (unless given) and parts frozen, as `sae finetune` and sweep fine-tune groups make it.
import path from "node:path";
import { FINETUNE_MODES, FREEZE_GROUPS, type Config } from "../config/schema.ts";
import { SaeError } from "../errors.ts";

export interface FinetuneOptions {
  freeze?: string[];
  mode?: (typeof FINETUNE_MODES)[number];
  /** default: a tenth of the parent's steps */
  steps?: number;
  lr?: number;
  /** sparsity coefficient during the fine-tune; default 0 (off) */
  penalty?: number;
  runsDir: string;
  /** how the options were given, for messages ("--freeze", "finetune.freeze at file:line") */
  names?: { freeze: string; mode: string };
}

/** The raw config (to validate with configFromObject) of a fine-tune of the run in parentDir, whose resolved config is parent. */
export function finetuneConfig(parent: Config, parentDir: string, o: FinetuneOptions): Record<string, unknown> {
  const names = o.names ?? { freeze: "--freeze", mode: "--mode" };
  const freeze = o.freeze ?? [];
  for (const g of freeze) {
    if (!(FREEZE_GROUPS as readonly string[]).includes(g)) throw new SaeError("usage", `${names.freeze} ${freeze.join(",")}: unknown group "${g}"`, `groups: ${FREEZE_GROUPS.join(", ")}`);
  }
  if (freeze.length && o.mode) throw new SaeError("usage", `${names.freeze} and ${names.mode} both say what trains; give one`);
  const parentSteps = parent.train.phases.reduce((n, p) => n + p.steps, 0);
  const steps = o.steps ?? Math.max(1, Math.round(parentSteps / 10));
  // a mode that trains s needs the scaled variant: a standard parent converts exactly
  const needsScale = o.mode !== undefined && o.mode !== "encoder";
  let variant = parent.sae.variant;
  if (needsScale && variant === "standard") variant = "scaled";
  else if (needsScale && variant !== "scaled") throw new SaeError("usage", `${names.mode} ${o.mode} trains the scale s; a ${variant} run has none`, "use freeze with parameter groups instead (e.g. encoder)");
  const phase = { name: "finetune", steps, sparsity_coefficient: o.penalty ?? 0, warmup_steps: 0, ...(o.lr ? { lr: o.lr } : {}), ...(freeze.length ? { freeze } : {}), ...(o.mode ? { mode: o.mode } : {}) };
  const { steps: _s, ...train } = parent.train;
  return {
    ...parent,
    name: `${parent.name}-ft`,
    runs_dir: o.runsDir,
    init_from: path.resolve(parentDir),
    sae: { ...parent.sae, variant },
    train: { ...train, phases: [phase] },
  };
}
