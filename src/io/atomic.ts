// The one way the tool writes a file that matters (docs/formats.md#atomic-writes): into a
// temporary file beside it, flushed to disk (fsync), renamed over the target, and the folder
// flushed too, so that a crash at any moment leaves either the old file or the new one, whole —
// never half a file, and never a rename that a power loss undoes. A failed write removes its
// temporary file and leaves the target as it was, and says which path failed and why (a full
// disk, a read-only file system, a permission) as a SaeError, exit 1.
import fs from "node:fs";
import path from "node:path";
import { SaeError } from "../errors.ts";

/** Writes `file` with `write(fd)` (which may call fs.writeSync any number of times), atomically and durably. */
export function writeAtomicWith(file: string, write: (fd: number) => void): void {
  const tmp = `${file}.tmp-${process.pid}`;
  let fd: number | null = null;
  try {
    fd = fs.openSync(tmp, "w");
    write(fd);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = null;
    faultPoint(file);
    fs.renameSync(tmp, file);
  } catch (err) {
    if (fd !== null) fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw fsError(err, "write", file);
  }
  syncDir(path.dirname(file));
}

/** writeAtomicWith for a string or bytes */
export function writeFileAtomic(file: string, data: string | Uint8Array): void {
  writeAtomicWith(file, (fd) => {
    const bytes = typeof data === "string" ? Buffer.from(data) : data;
    let off = 0;
    while (off < bytes.byteLength) off += fs.writeSync(fd, bytes, off);
  });
}

/** Appends to a log file (metrics.csv); one write of a short line, so a crash leaves whole lines (a resume drops a cut one). */
export function appendFile(file: string, text: string): void {
  try {
    faultPoint(file);
    fs.appendFileSync(file, text);
  } catch (err) {
    throw fsError(err, "append to", file);
  }
}

/** fsync of a folder, so that a rename into it survives a power loss (a no-op where folders cannot be opened) */
export function syncDir(dir: string): void {
  let fd: number | null = null;
  try {
    fd = fs.openSync(dir, "r");
    fs.fsyncSync(fd);
  } catch {
    // some file systems refuse fsync on a folder; the rename is still atomic there
  } finally {
    if (fd !== null) fs.closeSync(fd);
  }
}

/** Creates a folder (and its parents), with the failure as a SaeError naming it. */
export function makeDir(dir: string): void {
  try {
    fs.mkdirSync(dir, { recursive: true });
  } catch (err) {
    throw fsError(err, "create the folder", dir);
  }
}

const TEMP = /\.tmp-(\d+)$/;

/**
 * Removes the temporary files that writers killed before their rename left in `dir` and its
 * sub-folders (`*.tmp-PID` whose process is gone). The caller holds the folder's lock.
 */
export function removeStaleTemps(dir: string): string[] {
  const removed: string[] = [];
  const walk = (d: string) => {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const ent of entries) {
      const p = path.join(d, ent.name);
      if (ent.isDirectory()) walk(p);
      else {
        const m = TEMP.exec(ent.name);
        if (m && Number(m[1]) !== process.pid && !alive(Number(m[1]))) {
          fs.rmSync(p, { force: true });
          removed.push(p);
        }
      }
    }
  };
  walk(dir);
  return removed;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** what each errno means to the user, and what to do about it */
const ERRNO: Record<string, [what: string, hint: string]> = {
  ENOSPC: ["no space left on the device", "free some space (or point --runs-dir at another disk); an interrupted run continues with `sae resume`"],
  EDQUOT: ["the disk quota is exhausted", "free some space (or point --runs-dir at another disk); an interrupted run continues with `sae resume`"],
  EROFS: ["the file system is read-only", "point --runs-dir at a writable folder"],
  EACCES: ["permission denied", "make the folder writable for this user, or point --runs-dir elsewhere"],
  EPERM: ["operation not permitted", "make the folder writable for this user, or point --runs-dir elsewhere"],
  ENAMETOOLONG: ["the name is too long for the file system", "use a shorter --run-id (or config name)"],
  ENOTDIR: ["a part of the path is a file, not a folder", "move that file away, or choose another path (--runs-dir)"],
  EEXIST: ["a file is in the way", "move it away, or choose another path (--runs-dir)"],
  EISDIR: ["it is a folder, not a file", "give the path of a file"],
  ENOENT: ["the folder does not exist (deleted while in use?)", "check the path"],
  EIO: ["an input/output error of the device", "check the disk (dmesg); the files written before are whole"],
  EMFILE: ["too many open files", "raise the limit (ulimit -n)"],
};

/** An fs error as a SaeError (exit 1) naming the path and what failed; anything else unchanged. */
export function fsError(err: unknown, action: string, file: string): unknown {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  if (err instanceof SaeError || typeof code !== "string") return err;
  const [what, hint] = ERRNO[code] ?? [code, "check the path and the disk"];
  return new SaeError("runtime", `cannot ${action} ${file}: ${what} (${code})`, hint);
}

/**
 * Fault injection for the crash tests (test/crash.test.ts, test/recovery.test.ts), off unless
 * SAE_FAULT is set: `kill@N` sends SIGKILL to this process at its N-th write point (just before
 * an atomic write's rename, or before an append), `stop@N` SIGSTOP (a test then signals the
 * stopped process, or finds it holding its lock), `ENOSPC@N` (any errno code) fails that write
 * with the error instead; `ACTION@suffix` acts at the first write of a path ending with suffix.
 * SAE_FAULT_TRACE=1 prints each point to stderr, so a test can count them.
 */
let points = 0, fired = false, lastSpec: string | undefined;
function faultPoint(file: string): void {
  const spec = process.env.SAE_FAULT, trace = process.env.SAE_FAULT_TRACE;
  if (spec === undefined && trace === undefined) return;
  if (spec !== lastSpec) [points, fired, lastSpec] = [0, false, spec]; // a test in this process set a new fault
  points++;
  if (trace) fs.writeSync(2, `fault point ${points}: ${file}\n`);
  if (!spec || fired) return;
  const at = spec.indexOf("@");
  const action = spec.slice(0, at), where = spec.slice(at + 1);
  const hit = /^\d+$/.test(where) ? Number(where) === points : file.endsWith(where);
  if (!hit) return;
  fired = true; // once: the write a resume retries goes through
  if (action === "kill") process.kill(process.pid, "SIGKILL");
  if (action === "stop") {
    process.kill(process.pid, "SIGSTOP");
    return;
  }
  throw Object.assign(new Error(`${action}: injected fault writing ${file}`), { code: action, path: file });
}
