import { Command } from "commander";
import path from "node:path";
import { runsInTrainingOrder, shownStatus } from "../io/run.ts";
import { loadConfig } from "../config/load.ts";
import { variantDef } from "../sae/index.ts";
import { knobText } from "../sae/variant.ts";
import type { CliIo } from "./io.ts";
import { readEval } from "./eval.ts";

export function runsCommand(io: CliIo): Command {
  return new Command("runs")
    .description("list runs, oldest first in the order they trained (the last line is latest): id, variant, status (dead: marked running, its process gone), steps, MSE, FVU, L0, dead %")
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
        // eval.json may lack a metric (older, hand-edited, another tool's): "-" for what is not a number
        const e = readEval(dir) as Record<string, any> | null;
        const row = [
          id, s?.variant ?? "?", shownStatus(dir, s), s ? `${s.step}/${s.steps}` : "?",
          num(e?.mse, (v) => v.toPrecision(4)), num(e?.fvu, (v) => v.toFixed(4)), num(e?.l0, (v) => v.toFixed(1)), num(e?.dead_frac, (v) => (100 * v).toFixed(1)),
        ];
        if (opts.wide) {
          row.push(s?.knob ?? knob(dir), num(e?.dense_frac, (v) => (100 * v).toFixed(1)), num(e?.gamma, (v) => v.toFixed(3)), num(e?.ground_truth?.recovered_0_9, (v) => (100 * v).toFixed(1)));
          // eval.json written before conventions existed used the sae one (docs/downstream.md)
          const ds = e?.downstream && typeof e.downstream === "object" ? e.downstream : null;
          row.push(ds ? String(ds.convention ?? "sae") : "-", num(ds?.ce_loss_recovered, (v) => v.toFixed(4)));
        }
        rows.push(row);
      }
      const widths = rows[0].map((_, j) => Math.max(...rows.map((r) => r[j].length)));
      for (const r of rows) io.out(r.map((c, j) => (j >= 3 ? c.padStart(widths[j]) : c.padEnd(widths[j]))).join("  ").trimEnd());
    });
}

function num(v: unknown, f: (v: number) => string): string {
  return typeof v === "number" ? f(v) : "-";
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
