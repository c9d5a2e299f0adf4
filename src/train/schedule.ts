// Schedules are pure functions of the step within a phase (0-based): the LR and the sparsity
// coefficient's warm-up multiplier.
import type { Phase } from "../config/schema.ts";

/** linear warm-up from 0 over warmup_steps, flat, then linear decay to 0 over the last decay_fraction */
export function lrAt(step: number, ph: Phase): number {
  const warm = ph.warmup_steps > 0 ? Math.min(1, (step + 1) / ph.warmup_steps) : 1;
  const decaySteps = Math.floor(ph.decay_fraction * ph.steps);
  const decayStart = ph.steps - decaySteps;
  const decay = decaySteps > 0 && step >= decayStart ? Math.max(0, (ph.steps - step) / decaySteps) : 1;
  return ph.lr * warm * decay;
}

/** linear sparsity-coefficient warm-up from 0 */
export function sparsityAt(step: number, ph: Phase): number {
  return ph.sparsity_warmup_steps > 0 ? Math.min(1, (step + 1) / ph.sparsity_warmup_steps) : 1;
}
