// The divergence guard (docs/training.md#divergence): a step whose loss or gradient norm is not
// finite, or has grown by orders of magnitude over its value at the first step the process took in
// the phase, stops the run before the blown-up weights reach a checkpoint. The loop checks every
// step where the engine reports it at once (the host-memory stepper) and every logging window;
// checkpoints are written only after a check, so the newest one holds weights from before the
// blow-up, and `sae resume RUN --set train.lr=...` continues from it.

/** loss growth over the first step's that counts as divergence: a healthy run's loss falls from its first step (sparsity warm-up raises it a few times at most) */
export const LOSS_GROWTH = 1e3;
/** the same for the gradient norm (before clipping), which swings more */
export const GRAD_GROWTH = 1e4;

export class DivergenceError extends Error {
  readonly step: number;
  constructor(step: number, what: string) {
    super(what);
    this.name = "DivergenceError";
    this.step = step;
  }
}

export class DivergenceGuard {
  private loss0 = NaN;
  private grad0 = NaN;

  /** a new phase: new references */
  reset(): void {
    this.loss0 = NaN;
    this.grad0 = NaN;
  }

  /** throws DivergenceError when `step` (or the window ending there: `steps` > 1) diverged */
  check(step: number, loss: number, gradNorm: number, steps = 1): void {
    const at = steps > 1 ? `in steps ${step - steps + 1}..${step}` : `at step ${step}`;
    if (!Number.isFinite(loss)) throw new DivergenceError(step, `the loss became ${loss} ${at}`);
    if (!Number.isFinite(gradNorm)) throw new DivergenceError(step, `the gradient norm became ${gradNorm} ${at} (loss ${loss.toPrecision(4)})`);
    if (Number.isNaN(this.loss0)) {
      this.loss0 = loss;
      this.grad0 = gradNorm;
      return;
    }
    if (this.loss0 > 0 && loss > LOSS_GROWTH * this.loss0) throw new DivergenceError(step, `the loss became ${loss.toPrecision(4)} ${at}, over ${LOSS_GROWTH}× its first value ${this.loss0.toPrecision(4)}`);
    if (this.grad0 > 0 && gradNorm > GRAD_GROWTH * this.grad0) throw new DivergenceError(step, `the gradient norm became ${gradNorm.toPrecision(4)} ${at}, over ${GRAD_GROWTH}× its first value ${this.grad0.toPrecision(4)}`);
  }
}

/** a learning rate ten times smaller, in one significant digit (1e3 → 100, 0.005 → 0.0005) */
export function smallerLr(lr: number): string {
  return String(Number((lr / 10).toPrecision(1)));
}
