// One process per run: runs/<id>/lock names the process that works on the run (train, resume,
// eval; a sweep's runs through train), with its PID, host and start. It is created whole or not
// at all: written to a file of its own, then hard-linked to `lock`, which fails when a lock is
// already there (link, like open with O_EXCL, is atomic). A lock whose holder is gone (killed,
// the machine rebooted) is taken over with a message; one held by a live process, or by another
// host where liveness cannot be checked, refuses the command. docs/formats.md#the-lock
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { SaeError } from "../errors.ts";
import { fsError, syncDir } from "./atomic.ts";

export interface LockInfo {
  pid: number;
  host: string;
  /** what holds it: train, resume, eval */
  command: string;
  /** when it was taken (ISO time) */
  since: string;
  /** the process's start time in clock ticks since boot (/proc/PID/stat), so a reused PID is not mistaken for the holder */
  pid_start?: string;
}

export type Holder = "alive" | "dead" | "elsewhere";

export interface RunLock {
  readonly file: string;
  release(): void;
}

const held = new Map<string, LockInfo>();
let exitHook = false;

/**
 * Takes the lock of the run folder `dir` for `command`, or throws naming the holder. `log` gets
 * the take-over message. readOnlyOk: a folder nobody can write to needs no lock (sae eval prints
 * its metrics there, then says that eval.json cannot be written).
 */
export function acquireRunLock(dir: string, command: string, log: (line: string) => void, opts: { readOnlyOk?: boolean } = {}): RunLock {
  const run = path.basename(path.resolve(dir));
  return acquireLock(path.join(dir, "lock"), { what: `run ${run}`, busyHint: "one process works on a run at a time: wait for it to finish, or stop it (Ctrl-C or kill PID: it saves a checkpoint) and resume" }, command, log, opts);
}

/**
 * The lock file `file` (its folder exists) for `command`, taken as acquireRunLock describes. `what`
 * names the locked thing in messages ("run x", "sweep run y"); `busyHint` is the fix offered when
 * a live process holds it.
 */
export function acquireLock(file: string, names: { what: string; busyHint: string }, command: string, log: (line: string) => void, opts: { readOnlyOk?: boolean } = {}): RunLock {
  const dir = path.dirname(file);
  const { what } = names;
  const mine: LockInfo = { pid: process.pid, host: os.hostname(), command, since: new Date().toISOString(), pid_start: processStart(process.pid) ?? undefined };
  const tmp = `${file}.tmp-${process.pid}`;
  try {
    fs.writeFileSync(tmp, JSON.stringify(mine) + "\n");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (opts.readOnlyOk && (code === "EROFS" || code === "EACCES" || code === "EPERM")) return { file, release: () => {} };
    throw fsError(err, "create the lock", tmp);
  }
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        fs.linkSync(tmp, file);
        break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST" || attempt >= 5) throw fsError(err, "create the lock", file);
      }
      const holder = readLock(file);
      if (holder === undefined) continue; // released meanwhile
      const state = holder ? holderState(holder) : "dead";
      if (state === "alive") throw new SaeError("usage", `${what} is in use by ${describe(holder!)}`, names.busyHint);
      if (state === "elsewhere") {
        throw new SaeError("usage", `${what} is locked by ${describe(holder!)}; whether that process still runs cannot be checked from ${os.hostname()}`, `if no sae process works on it there any more, delete ${file}`);
      }
      // the holder is gone: move its lock aside and try again (if another process took it over
      // first, the link above fails again and finds that process alive)
      const aside = `${file}.stale-${process.pid}`;
      try {
        fs.renameSync(file, aside);
      } catch {
        continue;
      }
      const moved = readLock(aside);
      if (moved && holder && (moved.pid !== holder.pid || moved.since !== holder.since)) {
        // a live process's fresh lock was moved by mistake: put it back
        try {
          fs.linkSync(aside, file);
        } catch {
          // it took the lock again meanwhile
        }
      } else {
        log(`taking over the lock of ${what}: ${holder ? `its holder (${describe(holder)}) is gone` : "its lock file was unreadable"}`);
      }
      fs.rmSync(aside, { force: true });
    }
  } finally {
    fs.rmSync(tmp, { force: true });
  }
  syncDir(dir);
  held.set(file, mine);
  if (!exitHook) {
    exitHook = true;
    // a process that exits on its own (process.exit, an uncaught error) leaves no lock behind
    process.on("exit", () => {
      for (const f of [...held.keys()]) release(f);
    });
  }
  return { file, release: () => release(file) };
}

function release(file: string): void {
  const mine = held.get(file);
  held.delete(file);
  if (!mine) return;
  const now = readLock(file);
  if (now && now.pid === mine.pid && now.since === mine.since) fs.rmSync(file, { force: true });
}

/** the lock's holder: null when the file is unreadable, undefined when there is none */
export function readLock(file: string): LockInfo | null | undefined {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "ENOENT" ? undefined : null;
  }
  try {
    const v = JSON.parse(text);
    return v && typeof v === "object" && Number.isInteger(v.pid) && typeof v.host === "string" ? (v as LockInfo) : null;
  } catch {
    return null;
  }
}

/** Whether the holder of a run's lock still runs: `null` when the run has no lock. */
export function runHolder(dir: string): { holder: LockInfo | null; state: Holder } | null {
  const h = readLock(path.join(dir, "lock"));
  if (h === undefined) return null;
  return { holder: h, state: h ? holderState(h) : "dead" };
}

export function holderState(h: LockInfo): Holder {
  if (h.host !== os.hostname()) return "elsewhere";
  try {
    process.kill(h.pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EPERM") return "dead";
  }
  // the PID exists: it is the holder unless the holder died and the PID was reused, or it is a zombie
  const start = processStart(h.pid);
  if (start === null) return "alive";
  if (start === "zombie") return "dead";
  return h.pid_start === undefined || h.pid_start === start ? "alive" : "dead";
}

/** field 22 of /proc/PID/stat (start time in clock ticks), "zombie" for an exited, unreaped process, null where /proc is missing */
function processStart(pid: number): string | null {
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return null;
  }
  // the command name (field 2) is in parentheses and may hold spaces: split after its last ')'
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  if (fields[0] === "Z" || fields[0] === "X") return "zombie";
  return fields[19] ?? null;
}

function describe(h: LockInfo): string {
  return `sae ${h.command} (pid ${h.pid} on ${h.host}, since ${h.since})`;
}
