// The one way the tool writes a file that matters (docs/formats.md#atomic-writes): into a
// temporary file beside it, flushed to disk (fsync), renamed over the target, and the folder
// flushed too, so that a crash at any moment leaves either the old file or the new one, whole —
// never half a file, and never a rename that a power loss undoes. A failed write removes its
// temporary file and leaves the target as it was.
import fs from "node:fs";
import path from "node:path";

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
    fs.renameSync(tmp, file);
  } catch (err) {
    if (fd !== null) fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw err;
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
