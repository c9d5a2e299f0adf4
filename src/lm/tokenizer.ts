// llama2.c's tokenizer file, for showing tokens as text (decoding only): int32 max_token_length,
// then per token a float32 merge score, an int32 byte length and the bytes. Byte-fallback tokens
// are spelled "<0xXX>"; a leading U+2581 (or, as llama2.c's export writes it, a space) marks a
// word start. As in run.c's decode, the space after BOS is dropped.
import fs from "node:fs";
import { SaeError } from "../errors.ts";
import { BOS } from "./llama.ts";

/** llama2.c's fixed ids: run.c encodes BOS as 1 and EOS as 2; id 0 is <unk> (its tokenizer export) */
export const UNK = 0;
export const EOS = 2;

/** The special tokens, by id; llama2.c's tokenizers have no padding token, so pad is set only when a
 *  tokenizer file has a piece spelled "<pad>". */
export interface SpecialTokens { unk: number; bos: number; eos: number; pad: number | null }

export function specialTokens(tokenizer: Tokenizer | null = null): SpecialTokens {
  const pad = tokenizer ? tokenizer.pieces.findIndex((p) => p.toString("utf8") === "<pad>") : -1;
  return { unk: UNK, bos: BOS, eos: EOS, pad: pad >= 0 ? pad : null };
}

export class Tokenizer {
  readonly pieces: Buffer[];

  constructor(file: string, vocab?: number) {
    let buf: Buffer;
    try {
      buf = fs.readFileSync(file);
    } catch (err) {
      throw new SaeError("data", `cannot read tokenizer ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, "give the path of a llama2.c tokenizer .bin file");
    }
    const pieces: Buffer[] = [];
    let o = 4;
    while (o < buf.length && (vocab === undefined || pieces.length < vocab)) {
      if (o + 8 > buf.length) break;
      const len = buf.readInt32LE(o + 4);
      if (len < 0 || o + 8 + len > buf.length) throw new SaeError("data", `${file}: token ${pieces.length} claims ${len} bytes past the end of the file (truncated or not a llama2.c tokenizer)`);
      pieces.push(Buffer.from(buf.subarray(o + 8, o + 8 + len)));
      o += 8 + len;
    }
    if (vocab !== undefined && pieces.length !== vocab) {
      throw new SaeError("data", `${file} has ${pieces.length} tokens, the model's vocabulary has ${vocab}`, "use the tokenizer that belongs to the model");
    }
    this.pieces = pieces;
  }

  /** bytes of one token, given the token before it */
  piece(token: number, prev: number): Buffer {
    let p = this.pieces[token] ?? Buffer.from(`<${token}?>`);
    const s = p.toString("latin1");
    const byte = /^<0x([0-9A-Fa-f]{2})>$/.exec(s);
    if (byte) return Buffer.from([parseInt(byte[1], 16)]);
    p = Buffer.from(p.toString("utf8").replace(/\u2581/g, " "));
    if (prev === BOS && p[0] === 0x20) p = p.subarray(1);
    return p;
  }

  decode(tokens: ArrayLike<number>): string {
    const parts: Buffer[] = [];
    for (let i = 0; i < tokens.length; i++) if (tokens[i] !== BOS) parts.push(this.piece(tokens[i], i > 0 ? tokens[i - 1] : BOS));
    return Buffer.concat(parts).toString("utf8");
  }
}
