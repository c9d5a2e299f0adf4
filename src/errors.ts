// One error type for everything the user can cause or fix. Only bin/sae.js turns it into an exit
// code: 2 for usage and config errors, 1 for runtime failures, 130 for a run stopped by a signal
// (Ctrl-C, SIGTERM, SIGHUP: checkpointed and marked interrupted).
export type ErrorKind = "usage" | "config" | "data" | "runtime" | "interrupted";

export class SaeError extends Error {
  readonly kind: ErrorKind;
  readonly hint?: string;
  constructor(kind: ErrorKind, message: string, hint?: string) {
    super(message);
    this.name = "SaeError";
    this.kind = kind;
    this.hint = hint;
  }
  get exitCode(): number {
    if (this.kind === "interrupted") return 130;
    return this.kind === "usage" || this.kind === "config" ? 2 : 1;
  }
}
