import { readdirSync, readlinkSync } from 'node:fs';

/** Descriptors of this process open on files under `root` (deleted ones included). */
export function openUnder(root: string): string[] {
  const out: string[] = [];
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      const target = readlinkSync(`/proc/self/fd/${fd}`);
      if (target.startsWith(root)) out.push(target);
    } catch {
      // Closed while listing (the listing's own descriptor).
    }
  }
  return out;
}
