import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PRETTY_MAX_DEPTH, jsonEqual, nestedDeeperThan, prettyJson, stringifyIterative, stringifyJson } from '../../src/json-safe.js';

// The promise of src/json-safe.ts: the iterative writer prints exactly what JSON.stringify prints (so a
// record too deep for the native function reads back the same), it throws where the native one throws,
// and the comparisons answer as util.isDeepStrictEqual would on JSON values. The oracle is always
// the native JSON.stringify or a hand-built expectation, never the module itself.

/** `levels` nested arrays around `inner`: [[[...inner...]]]. */
function nest(levels: number, inner: unknown = 0): unknown {
  let v: unknown = inner;
  for (let i = 0; i < levels; i++) v = [v];
  return v;
}

const INDENTS = [undefined, 0, 1, 2, 4, 10, 11, 2.7, -3];

describe('stringifyIterative prints what JSON.stringify prints', () => {
  const cases: [string, unknown][] = [
    ['scalars', [1, -1.5, 0, 'a"b\n', true, false, null]],
    ['non-finite numbers are null', [NaN, Infinity, -Infinity]],
    ['empty containers', { a: {}, b: [], c: [{}], d: [[]] }],
    ['nested objects and arrays', { a: { b: [1, { c: 'x', d: [true, null] }] }, e: 'f', 'quoted"key': 2 }],
    ['undefined, functions and symbols: omitted from objects, null in arrays', {
      u: undefined, f: () => 1, s: Symbol('x'), keep: 1, arr: [undefined, () => 1, Symbol('y'), 2],
    }],
    ['an object whose every value is omitted', { u: undefined, f: () => 1 }],
    ['the first value omitted, then a kept one', { u: undefined, k: 1, v: undefined, w: [1] }],
    ['boxed primitives', [new Number(3), new String('s'), new Boolean(false), { n: new Number(NaN) }]],
    ['toJSON with its key, in objects and arrays', {
      when: new Date('2026-01-02T03:04:05.000Z'),
      keyed: { toJSON: (k: string) => `key=${k}` },
      list: [{ toJSON: (k: string) => `index=${k}` }, { toJSON: () => undefined }],
      gone: { toJSON: () => undefined },
      nested: { toJSON: () => ({ inner: [1, { toJSON: (k: string) => k }] }) },
    }],
    ['a top-level toJSON gets the empty key', { toJSON: (k: string) => ({ key: k }) }],
    ['deeper mixed nesting', [[{ a: [[], {}] }], { b: { c: { d: [1, [2, [3]]] } } }]],
  ];
  for (const [name, value] of cases) {
    it(name, () => {
      for (const indent of INDENTS) {
        expect(stringifyIterative(value, indent ?? 0)).toBe(JSON.stringify(value, null, indent));
      }
    });
  }

  it('top-level values with no JSON form give undefined, as the native function does', () => {
    for (const v of [undefined, () => 1, Symbol('z'), { toJSON: () => undefined }]) {
      expect(stringifyIterative(v, 2)).toBe(undefined);
      expect(JSON.stringify(v)).toBe(undefined);
    }
  });

  it('top-level scalars', () => {
    for (const v of [0, -0, 12.5, 'x', '', true, false, null, NaN, new String('q')]) {
      expect(stringifyIterative(v, 2)).toBe(JSON.stringify(v, null, 2));
    }
  });

  it('agrees with JSON.stringify on arbitrary JSON values, any indent', () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 5 }), fc.integer({ min: -2, max: 12 }), (v, indent) => {
        expect(stringifyIterative(v, indent)).toBe(JSON.stringify(v, null, indent));
      }),
      { numRuns: 300 },
    );
  });

  it('throws a TypeError for a cycle and for a BigInt, as the native function does', () => {
    const cyclic: Record<string, unknown> = { a: 1 };
    cyclic.self = { back: cyclic };
    expect(() => stringifyIterative(cyclic, 0)).toThrow(TypeError);
    expect(() => stringifyIterative([1, [2, 10n]], 0)).toThrow(TypeError);
    const arr: unknown[] = [];
    arr.push([arr]);
    expect(() => stringifyIterative(arr, 2)).toThrow(/circular/);
  });

  it('the same object twice side by side is no cycle', () => {
    const shared = { x: [1] };
    const v = { a: shared, b: shared, c: [shared, shared] };
    expect(stringifyIterative(v, 2)).toBe(JSON.stringify(v, null, 2));
  });
});

describe('stringifyJson', () => {
  it('gives the native output for ordinary values, indent or not', () => {
    const v = { a: [1, { b: 'c' }], d: null };
    expect(stringifyJson(v)).toBe(JSON.stringify(v));
    expect(stringifyJson(v, 2)).toBe(JSON.stringify(v, null, 2));
  });

  it('writes a value too deep for the native function, with the requested indent', () => {
    const levels = 100_000;
    const deep = nest(levels, { k: 'v' });
    expect(() => JSON.stringify(deep)).toThrow(RangeError);
    expect(stringifyJson(deep)).toBe('['.repeat(levels) + '{"k":"v"}' + ']'.repeat(levels));
    // Indented output grows with the square of the depth; 8,000 levels overflow the native function
    // here and print 64 M characters. The oracle is the layout JSON.stringify uses, checked on 3 levels.
    const layout = (n: number, width: number): string => {
      const lines: string[] = [];
      for (let k = 0; k < n; k++) lines.push(' '.repeat(k * width) + '[');
      lines.push(' '.repeat(n * width) + '0');
      for (let k = n - 1; k >= 0; k--) lines.push(' '.repeat(k * width) + ']');
      return lines.join('\n');
    };
    expect(layout(3, 1)).toBe(JSON.stringify(nest(3), null, 1));
    // Native overflow depends on how deep the caller's stack already is (the module's reason to be), so
    // the indented case is taken where it happens in practice: a shallow value, called with little
    // stack left. Recurse to the stack's end, then on the way back find a depth where the native
    // function overflows on this value and stringifyJson still answers.
    const value = nest(200);
    const expected = layout(200, 1);
    let got: string | undefined;
    let nativeOk = false;
    const probe = (): void => {
      try {
        probe();
      } catch (err) {
        if (!(err instanceof RangeError)) throw err;
      }
      if (got !== undefined || nativeOk) return;
      try {
        JSON.stringify(value, null, 1);
        nativeOk = true;
        return;
      } catch {
        // Too deep for the native function here: the iterative path must answer.
      }
      try {
        got = stringifyJson(value, 1);
      } catch {
        // Too deep for anything; one frame up.
      }
    };
    probe();
    expect(got === expected).toBe(true);
  });

  it('rethrows errors that are not a stack overflow (cycle, BigInt)', () => {
    const cyclic: Record<string, unknown> = {};
    cyclic.me = cyclic;
    expect(() => stringifyJson(cyclic)).toThrow(TypeError);
    expect(() => stringifyJson({ n: 1n })).toThrow(/BigInt/);
    const throwing = {
      toJSON() {
        throw new RangeError('not a call stack problem');
      },
    };
    expect(() => stringifyJson(throwing)).toThrow('not a call stack problem');
  });

  it('a failure that is no stack overflow is not retried: toJSON runs once and its error comes out', () => {
    let calls = 0;
    const flaky = {
      toJSON() {
        calls++;
        if (calls === 1) throw new TypeError('first call fails');
        return 'second call';
      },
    };
    expect(() => stringifyJson({ flaky })).toThrow('first call fails');
    expect(calls).toBe(1);
    // Only a RangeError is a stack overflow, whatever another error's message says.
    calls = 0;
    const talky = {
      toJSON() {
        calls++;
        if (calls === 1) throw new Error('Maximum call stack size exceeded (a message, not an overflow)');
        return 'second call';
      },
    };
    expect(() => stringifyJson([talky])).toThrow('a message, not an overflow');
    expect(calls).toBe(1);
  });

  it('applies toJSON once: a result that has a toJSON of its own is printed as is', () => {
    const v = { a: { toJSON: () => ({ toJSON: () => 'twice', kept: 1 }) }, b: [{ toJSON: () => ({ toJSON: () => 'twice' }) }] };
    expect(stringifyIterative(v, 0)).toBe(JSON.stringify(v));
    expect(stringifyIterative(v, 0)).toBe('{"a":{"kept":1},"b":[{}]}');
  });
});

describe('jsonEqual', () => {
  const equal: [unknown, unknown][] = [
    [1, 1], ['a', 'a'], [null, null], [true, true], [NaN, NaN],
    [{ a: 1, b: [1, 2] }, { b: [1, 2], a: 1 }], [[], []], [{}, {}], [[{ x: [null] }], [{ x: [null] }]],
  ];
  const unequal: [unknown, unknown][] = [
    [1, 2], [1, '1'], [0, -0], [null, {}], [{}, null], [null, 0], [[], {}], [{}, []], [[1], [1, 2]], [[1, 2], [2, 1]],
    [{ a: 1 }, { a: 1, b: 2 }], [{ a: 1, b: 2 }, { a: 1 }], [{ a: 1 }, { b: 1 }], [{ a: undefined }, { b: undefined }],
    [{ a: [1, { b: 2 }] }, { a: [1, { b: 3 }] }], [[[1]], [[2]]], [{ a: 1 }, 'x'], ['x', { a: 1 }],
    // An empty container against a scalar: no keys on either side, still unequal.
    [{}, 5], [5, {}], [[], 0], ['', []], [{}, true], [{}, ''],
  ];
  it('equal pairs are equal both ways', () => {
    for (const [a, b] of equal) {
      expect(jsonEqual(a, b)).toBe(true);
      expect(jsonEqual(b, a)).toBe(true);
    }
  });
  it('unequal pairs are unequal both ways', () => {
    for (const [a, b] of unequal) {
      expect(jsonEqual(a, b)).toBe(false);
      expect(jsonEqual(b, a)).toBe(false);
    }
  });
  it('compares a value deeper than the stack allows, and finds a difference at the bottom', () => {
    expect(jsonEqual(nest(50_000, 1), nest(50_000, 1))).toBe(true);
    expect(jsonEqual(nest(50_000, 1), nest(50_000, 2))).toBe(false);
  });
});

describe('nestedDeeperThan and prettyJson', () => {
  it('counts the value itself as level 1 and stops at the first level over', () => {
    expect(nestedDeeperThan(5, 0)).toBe(false);
    expect(nestedDeeperThan(null, 0)).toBe(false);
    expect(nestedDeeperThan([], 0)).toBe(true);
    expect(nestedDeeperThan([], 1)).toBe(false);
    expect(nestedDeeperThan(nest(3), 3)).toBe(false); // [[[0]]]: three levels of arrays
    expect(nestedDeeperThan(nest(3), 2)).toBe(true);
    expect(nestedDeeperThan({ a: { b: 1 } }, 2)).toBe(false);
    expect(nestedDeeperThan({ a: { b: {} } }, 2)).toBe(true);
    expect(nestedDeeperThan({ a: 1, b: [1, 'x', null] }, 2)).toBe(false);
    expect(nestedDeeperThan({ a: 1, b: [1, [null]] }, 2)).toBe(true);
    expect(nestedDeeperThan([{}, [], 1], 1)).toBe(true);
    expect(nestedDeeperThan([1, 'a', null, true], 1)).toBe(false);
  });

  it(`prettyJson indents up to ${PRETTY_MAX_DEPTH} levels and prints deeper values on one line`, () => {
    expect(PRETTY_MAX_DEPTH).toBe(64);
    const atLimit = nest(PRETTY_MAX_DEPTH - 1, {});
    const over = nest(PRETTY_MAX_DEPTH, {});
    expect(prettyJson(atLimit)).toBe(JSON.stringify(atLimit, null, 2));
    expect(prettyJson(over)).toBe(JSON.stringify(over));
    expect(prettyJson({ a: [1] })).toBe('{\n  "a": [\n    1\n  ]\n}');
  });
});
