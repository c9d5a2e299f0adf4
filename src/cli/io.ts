// Where commands write: stdout for results, stderr for logs. Tests pass their own.
export interface CliIo {
  out(text: string): void;
  err(text: string): void;
  /** whether stderr is a terminal (progress bars) */
  isTTY: boolean;
}

export const processIo: CliIo = {
  out: (t) => process.stdout.write(t.endsWith("\n") ? t : t + "\n"),
  err: (t) => process.stderr.write(t.endsWith("\n") ? t : t + "\n"),
  isTTY: Boolean(process.stderr.isTTY),
};
