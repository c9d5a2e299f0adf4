import { Command } from "commander";
import path from "node:path";
import { listRunIds, readStatus } from "../io/run.ts";
import type { CliIo } from "./io.ts";
import { readEval } from "./eval.ts";

export function runsCommand(io: CliIo): Command {
  return new Command("runs")
    .description("list runs: id, variant, status, steps, MSE, FVU, L0, dead %")
    .option("--runs-dir <dir>", "folder that holds runs", "runs")
    .action((opts: { runsDir: string }) => {
      const ids = listRunIds(opts.runsDir);
      if (ids.length === 0) {
        io.out(`no runs in ${opts.runsDir}/ (start one with: sae train configs/quickstart.yaml)`);
        return;
      }
      const rows = [["id", "variant", "status", "steps", "mse", "fvu", "l0", "dead%"]];
      for (const id of ids) {
        const dir = path.join(opts.runsDir, id);
        const s = readStatus(dir);
        const e = readEval(dir);
        rows.push([
          id, s?.variant ?? "?", s?.status ?? "unknown", s ? `${s.step}/${s.steps}` : "?",
          e ? e.mse.toPrecision(4) : "-", e ? e.fvu.toFixed(4) : "-", e ? e.l0.toFixed(1) : "-", e ? (100 * e.dead_frac).toFixed(1) : "-",
        ]);
      }
      const widths = rows[0].map((_, j) => Math.max(...rows.map((r) => r[j].length)));
      for (const r of rows) io.out(r.map((c, j) => (j >= 3 ? c.padStart(widths[j]) : c.padEnd(widths[j]))).join("  ").trimEnd());
    });
}
