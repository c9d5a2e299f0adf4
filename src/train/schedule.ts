// Schedules are pure functions of the step (0-based): the LR multiplier and the sparsity
// coefficient multiplier.
import type { Config } from "../config/schema.ts";

/** linear warm-up from 0 over warmup_steps, flat, then linear decay to 0 over the last decay_fraction */
export function lrAt(step: number, t: Config["train"]): number {
  const warm = t.warmup_steps > 0 ? Math.min(1, (step + 1) / t.warmup_steps) : 1;
  const decaySteps = Math.floor(t.decay_fraction * t.steps);
  const decayStart = t.steps - decaySteps;
  const decay = decaySteps > 0 && step >= decayStart ? Math.max(0, (t.steps - step) / decaySteps) : 1;
  return t.lr * warm * decay;
}

/** linear sparsity-coefficient warm-up from 0 */
export function sparsityAt(step: number, t: Config["train"]): number {
  return t.sparsity_warmup_steps > 0 ? Math.min(1, (step + 1) / t.sparsity_warmup_steps) : 1;
}
