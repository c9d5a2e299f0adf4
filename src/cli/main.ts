// Assembles the commands and maps errors to exit codes: 0 success, 2 usage or config error,
// 1 runtime failure. Nothing else calls process.exit.
import { Command, CommanderError } from "commander";
import { SaeError } from "../errors.ts";
import { fsError } from "../io/atomic.ts";
import { processIo, type CliIo } from "./io.ts";
import { trainCommand } from "./train.ts";
import { evalCommand } from "./eval.ts";
import { finetuneCommand } from "./finetune.ts";
import { resumeCommand } from "./resume.ts";
import { runsCommand } from "./runs.ts";
import { doctorCommand } from "./doctor.ts";
import { harvestCommand } from "./harvest.ts";
import { exportCommand, importCommand } from "./exchange.ts";
import { featuresCommand } from "./features.ts";
import { sweepCommand } from "./sweep.ts";
import { reportCommand } from "./report.ts";

export async function main(argv: string[], io: CliIo = processIo): Promise<number> {
  const program = new Command("sae")
    .description("Train, evaluate and compare sparse autoencoders from YAML experiments")
    .version("0.1.0")
    .exitOverride()
    .configureOutput({ writeOut: (s) => io.out(s), writeErr: (s) => io.err(s) })
    .showHelpAfterError("(run with --help for usage)");
  for (const make of [trainCommand, resumeCommand, finetuneCommand, evalCommand, featuresCommand, harvestCommand, exportCommand, importCommand, runsCommand, doctorCommand,
    sweepCommand, reportCommand]) {
    program.addCommand(make(io).exitOverride().configureOutput({ writeOut: (s) => io.out(s), writeErr: (s) => io.err(s) }));
  }
  try {
    await program.parseAsync(argv, { from: "user" });
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === "commander.helpDisplayed" || e.code === "commander.version" || e.code === "commander.help") return 0;
      return 2; // commander already printed the message
    }
    // an fs error that no caller put into words still names its path (io/atomic.ts fsError)
    if (!(e instanceof SaeError) && typeof (e as NodeJS.ErrnoException)?.path === "string") e = fsError(e, "access", (e as NodeJS.ErrnoException).path!);
    if (e instanceof SaeError && e.kind === "interrupted") return e.exitCode; // the loop said where it stopped
    if (e instanceof SaeError) {
      io.err(`error: ${e.message}`);
      if (e.hint) io.err(`hint: ${e.hint}`);
      return e.exitCode;
    }
    io.err(`error: ${(e as Error).message}`);
    if (process.env.SAE_DEBUG) io.err(String((e as Error).stack));
    return 1;
  }
}
