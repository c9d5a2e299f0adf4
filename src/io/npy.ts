// NumPy .npy files (format versions 1–3: magic "\x93NUMPY", version, header length, a Python-dict
// header {'descr', 'fortran_order', 'shape'} padded to 64 bytes, then the raw array). Only the
// header is read here; the data is read in pieces by the stores.
import fs from "node:fs";
import { writeAtomicWith } from "./atomic.ts";
import { SaeError } from "../errors.ts";

export interface NpyHeader {
  /** numpy type string without the byte order, e.g. "f4", "f2", "u2", "i4" */
  kind: string;
  shape: number[];
  /** byte offset of the data */
  offset: number;
  itemBytes: number;
}

export function readNpyHeader(file: string): NpyHeader {
  const fd = openOrExplain(file);
  try {
    const head = Buffer.alloc(12);
    const got = fs.readSync(fd, head, 0, 12, 0);
    const bad = (what: string) => new SaeError("data", `${file} is not a valid .npy file: ${what}`, "write it with numpy.save (a C-order array of float32, float16 or bfloat16-as-uint16)");
    if (got < 10 || head.toString("latin1", 0, 6) !== "\x93NUMPY") throw bad("it does not start with the .npy magic bytes");
    const major = head[6];
    const hlen = major === 1 ? head.readUInt16LE(8) : head.readUInt32LE(8);
    const start = major === 1 ? 10 : 12;
    const text = Buffer.alloc(hlen);
    if (fs.readSync(fd, text, 0, hlen, start) < hlen) throw bad("the header is cut short");
    const h = text.toString("latin1");
    const descr = /'descr':\s*'([^']+)'/.exec(h)?.[1];
    const fortran = /'fortran_order':\s*(True|False)/.exec(h)?.[1];
    const shapeText = /'shape':\s*\(([^)]*)\)/.exec(h)?.[1];
    if (!descr || !fortran || shapeText === undefined) throw bad(`cannot parse the header ${JSON.stringify(h.trim())}`);
    if (fortran === "True") throw bad("the array is in Fortran order", );
    if (descr[0] === ">") throw bad(`the data is big-endian (${descr})`);
    const kind = descr.replace(/^[<|=]/, "");
    const shape = shapeText.split(",").map((s) => s.trim()).filter((s) => s !== "").map(Number);
    const itemBytes = Number(kind.slice(1));
    return { kind, shape, offset: start + hlen, itemBytes };
  } finally {
    fs.closeSync(fd);
  }
}

/** A .npy header for a C-order little-endian array (version 1), padded so the data starts at a multiple of 64. */
export function npyHeader(descr: string, shape: number[]): Buffer {
  const dims = shape.length === 1 ? `${shape[0]},` : shape.join(", ");
  let dict = `{'descr': '${descr}', 'fortran_order': False, 'shape': (${dims}), }`;
  const total = 10 + dict.length + 1;
  dict += " ".repeat((64 - (total % 64)) % 64) + "\n";
  const head = Buffer.alloc(10);
  head.write("\x93NUMPY", 0, "latin1");
  head[6] = 1;
  head[7] = 0;
  head.writeUInt16LE(dict.length, 8);
  return Buffer.concat([head, Buffer.from(dict, "latin1")]);
}

/** Writes a whole array as .npy, atomically (io/atomic.ts). */
export function writeNpy(file: string, data: Float32Array | Int32Array, shape: number[]): void {
  writeAtomicWith(file, (fd) => {
    fs.writeSync(fd, npyHeader(data instanceof Float32Array ? "<f4" : "<i4", shape));
    fs.writeSync(fd, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  });
}

export function openOrExplain(file: string): number {
  try {
    return fs.openSync(file, "r");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new SaeError("data", `cannot open ${file}: ${code === "ENOENT" ? "no such file" : code ?? (err as Error).message}`, "check the path (relative paths in a config are relative to the config file's folder)");
  }
}
