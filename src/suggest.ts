/**
 * Edit distance with adjacent transpositions (optimal string alignment): `memroy` is one edit from
 * `memory`, as a typist sees it, not two.
 */
export function editDistance(a: string, b: string): number {
  const rows = a.length + 1;
  const cols = b.length + 1;
  const d: number[][] = Array.from({ length: rows }, (_, i) => Array.from({ length: cols }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  const at = (i: number, j: number): number => d[i]?.[j] ?? 0;
  for (let i = 1; i < rows; i++) {
    for (let j = 1; j < cols; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(at(i - 1, j) + 1, at(i, j - 1) + 1, at(i - 1, j - 1) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, at(i - 2, j - 2) + 1);
      (d[i] as number[])[j] = v;
    }
  }
  return at(a.length, b.length);
}

/**
 * The candidate closest to `word`, if it is close enough to be a typo of it: case differences are
 * free (`backupdir` → `backupDir`), and at most one edit per three characters (at least one) is allowed.
 * Returns null when nothing is that close, or when `word` is itself a candidate.
 */
export function didYouMean(word: string, candidates: Iterable<string>): string | null {
  const lower = word.toLowerCase();
  const limit = Math.max(1, Math.floor(word.length / 3));
  let best: string | null = null;
  let bestScore = Number.POSITIVE_INFINITY;
  for (const c of candidates) {
    if (c === word) return null;
    // Case-only differences rank just below an exact match, ahead of any real edit.
    const score = c.toLowerCase() === lower ? 0.5 : editDistance(lower, c.toLowerCase());
    if (score <= limit && score < bestScore) [best, bestScore] = [c, score];
  }
  return best;
}

/** ` (did you mean "x"?)`, or an empty string. */
export function didYouMeanText(word: string, candidates: Iterable<string>): string {
  const s = didYouMean(word, candidates);
  return s === null ? '' : ` (did you mean ${JSON.stringify(s)}?)`;
}
