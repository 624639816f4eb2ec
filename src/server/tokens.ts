import { createHash, timingSafeEqual } from 'node:crypto';

/** SHA-256 of a token's UTF-8 bytes: what the daemon keeps in memory to compare against. */
export function tokenDigest(token: string): Buffer {
  // A string is hashed as UTF-8 by default; naming the encoding only made a mutant no test can tell apart.
  return createHash('sha256').update(token).digest();
}

/**
 * Whether `given` is the token whose digest is `expected`. Constant time over the digests, so neither
 * the content nor the length of the expected token leaks through how long a wrong guess takes; a
 * prefix, a longer string or a different length is simply false (timingSafeEqual never sees unequal lengths).
 */
export function tokenMatches(given: string, expected: Buffer): boolean {
  return timingSafeEqual(tokenDigest(given), expected);
}
