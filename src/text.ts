// Small helpers for what the tool prints.

/** "1 run", "2 runs", "0 runs"; `plural` where adding an s is wrong */
export function count(n: number, noun: string, plural = `${noun}s`): string {
  return `${n} ${n === 1 ? noun : plural}`;
}
