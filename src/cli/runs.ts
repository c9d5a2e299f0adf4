import { Command } from "commander";
import path from "node:path";
import { runsInTrainingOrder } from "../io/run.ts";
import { loadConfig } from "../config/load.ts";
import { variantDef } from "../sae/index.ts";
import { knobText } from "../sae/variant.ts";
import type { CliIo } from "./io.ts";
import { readEval } from "./eval.ts";

export function runsCommand(io: CliIo): Command {
  return new Command("runs")
    .description("list runs, oldest first in the order they trained (the last line is latest): id, variant, status, steps, MSE, FVU, L0, dead %")
    .option("--runs-dir <dir>", "folder that holds runs", "runs")
    .option("--wide", "add the sparsity knob, dense %, gamma, recovered ground-truth features and the CE loss recovered (language-model data) with the convention it was computed by")
    .addHelpText("after", `
Examples:
  sae runs
  sae runs --wide --runs-dir runs/synthetic`)
    .action((opts: { runsDir: string; wide?: boolean }) => {
      const runs = runsInTrainingOrder(opts.runsDir);
      if (runs.length === 0) {
        io.out(`no runs in ${opts.runsDir}/ (start one with: sae train configs/quickstart.yaml)`);
        return;
      }
      const head = ["id", "variant", "status", "steps", "mse", "fvu", "l0", "dead%"];
      if (opts.wide) head.push("knob", "dense%", "gamma", "recovered%", "ce_conv", "ce_rec");
      const rows = [head];
      for (const { id, dir, status: s } of runs) {
        const e = readEval(dir);
        const row = [
          id, s?.variant ?? "?", s?.status ?? "unknown", s ? `${s.step}/${s.steps}` : "?",
          e ? e.mse.toPrecision(4) : "-", e ? e.fvu.toFixed(4) : "-", e ? e.l0.toFixed(1) : "-", e ? (100 * e.dead_frac).toFixed(1) : "-",
        ];
        if (opts.wide) {
          row.push(s?.knob ?? knob(dir), e ? (100 * e.dense_frac).toFixed(1) : "-", e ? e.gamma.toFixed(3) : "-", e?.ground_truth ? (100 * e.ground_truth.recovered_0_9).toFixed(1) : "-");
          // eval.json written before conventions existed used the sae one (docs/downstream.md)
          row.push(e?.downstream ? e.downstream.convention ?? "sae" : "-", e?.downstream ? e.downstream.ce_loss_recovered.toFixed(4) : "-");
        }
        rows.push(row);
      }
      const widths = rows[0].map((_, j) => Math.max(...rows.map((r) => r[j].length)));
      for (const r of rows) io.out(r.map((c, j) => (j >= 3 ? c.padStart(widths[j]) : c.padEnd(widths[j]))).join("  ").trimEnd());
    });
}

/** the run's sparsity setting from its config: k for TopK-style variants, else the penalty coefficient (an imported run's status.json states its own) */
function knob(dir: string): string {
  try {
    const c = loadConfig(path.join(dir, "config.yaml")).config;
    return knobText(variantDef(c.sae.variant), c.sae);
  } catch {
    return "?";
  }
}
