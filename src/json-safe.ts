/**
 * JSON helpers that never recurse on user data.
 *
 * V8's JSON.parse is iterative, but JSON.stringify (and util.isDeepStrictEqual, structuredClone, ...)
 * recurse: a value nested a few thousand levels deep overflows the stack, and how deep is "too deep"
 * depends on how deep the caller's own stack already is. Records written before the limits in
 * record.ts existed (a seed memory.json, an old backup) may be that deep, and must still be readable,
 * backed up and restored. So every place that serialises or compares a record goes through here.
 */

type Frame =
  | { kind: 'array'; value: unknown[]; index: number; indent: string }
  | { kind: 'object'; value: Record<string, unknown>; keys: string[]; index: number; wrote: boolean; indent: string };

function isStackOverflow(err: unknown): boolean {
  return err instanceof RangeError && /call stack/i.test(err.message);
}

/**
 * `JSON.stringify(value, null, indent)` with the same output, for any nesting depth. The native
 * function runs first (it is fast); only a value deep enough to overflow the stack takes the
 * iterative path. Throws what JSON.stringify throws for a cycle (TypeError) or BigInt.
 */
export function stringifyJson(value: unknown, indent?: number): string {
  try {
    return JSON.stringify(value, null, indent) as string;
  } catch (err) {
    if (!isStackOverflow(err)) throw err;
  }
  return stringifyIterative(value, indent ?? 0);
}

/** Applies toJSON as JSON.stringify does; `undefined` means "omit" (in objects) or `null` (in arrays). */
function prepare(value: unknown, key: string): unknown {
  if (typeof value === 'object' && value !== null && typeof (value as { toJSON?: unknown }).toJSON === 'function') {
    return (value as { toJSON: (k: string) => unknown }).toJSON(key);
  }
  return value;
}

/** The text of a scalar, or null when `value` is a container (pushed by the caller) or has no JSON form. */
function scalarText(value: unknown): string | undefined | null {
  switch (typeof value) {
    case 'string':
      return JSON.stringify(value);
    case 'number':
      return Number.isFinite(value) ? String(value) : 'null';
    case 'boolean':
      return value ? 'true' : 'false';
    case 'bigint':
      // Same error as the native function.
      return JSON.stringify(value);
    case 'undefined':
    case 'function':
    case 'symbol':
      return undefined;
    default:
      if (value === null) return 'null';
      if (value instanceof Number || value instanceof String || value instanceof Boolean) return JSON.stringify(value);
      return null;
  }
}

/** Exported for tests; use {@link stringifyJson}. */
export function stringifyIterative(root: unknown, indentWidth: number): string {
  const gap = ' '.repeat(Math.min(10, Math.max(0, Math.floor(indentWidth))));
  const out: string[] = [];
  const stack: Frame[] = [];
  // Ancestors of the current position, to throw on a cycle instead of looping forever.
  const ancestors = new Set<object>();

  /** Writes `value`; a container opens a frame and is finished by the loop below. False when omitted. */
  const open = (raw: unknown, key: string, indent: string, prepared = false): boolean => {
    const value = prepared ? raw : prepare(raw, key);
    const text = scalarText(value);
    if (text === undefined) return false;
    if (text !== null) {
      out.push(text);
      return true;
    }
    const obj = value as object;
    if (ancestors.has(obj)) throw new TypeError('Converting circular structure to JSON');
    ancestors.add(obj);
    if (Array.isArray(obj)) {
      out.push('[');
      stack.push({ kind: 'array', value: obj as unknown[], index: 0, indent });
    } else {
      out.push('{');
      stack.push({ kind: 'object', value: obj as Record<string, unknown>, keys: Object.keys(obj), index: 0, wrote: false, indent });
    }
    return true;
  };

  if (!open(root, '', '')) return undefined as unknown as string;
  while (stack.length > 0) {
    const top = stack[stack.length - 1]!;
    const inner = top.indent + gap;
    const sep = gap ? `\n${inner}` : '';
    if (top.kind === 'array') {
      if (top.index < top.value.length) {
        const i = top.index++;
        out.push(i === 0 ? sep : `,${sep}`);
        if (!open(top.value[i], String(i), inner)) out.push('null');
        continue;
      }
      if (top.value.length > 0 && gap) out.push(`\n${top.indent}`);
      out.push(']');
    } else {
      let opened = false;
      while (top.index < top.keys.length) {
        const key = top.keys[top.index++]!;
        const value = prepare(top.value[key], key);
        if (scalarText(value) === undefined) continue;
        out.push(`${top.wrote ? ',' : ''}${sep}${JSON.stringify(key)}:${gap ? ' ' : ''}`);
        top.wrote = true;
        open(value, key, inner, true);
        opened = true;
        break;
      }
      if (opened) continue;
      if (top.wrote && gap) out.push(`\n${top.indent}`);
      out.push('}');
    }
    ancestors.delete(top.value);
    stack.pop();
  }
  return out.join('');
}

/**
 * Deep equality of two JSON values (plain objects, arrays, strings, numbers, booleans, null) without
 * recursion. Object key order does not matter, as with util.isDeepStrictEqual.
 */
export function jsonEqual(a: unknown, b: unknown): boolean {
  const pending: [unknown, unknown][] = [[a, b]];
  while (pending.length > 0) {
    const [x, y] = pending.pop()!;
    if (Object.is(x, y)) continue;
    if (typeof x !== 'object' || typeof y !== 'object' || x === null || y === null) return false;
    if (Array.isArray(x) !== Array.isArray(y)) return false;
    if (Array.isArray(x)) {
      const ya = y as unknown[];
      if (x.length !== ya.length) return false;
      for (let i = 0; i < x.length; i++) pending.push([x[i], ya[i]]);
      continue;
    }
    const xo = x as Record<string, unknown>;
    const yo = y as Record<string, unknown>;
    const keys = Object.keys(xo);
    if (keys.length !== Object.keys(yo).length) return false;
    for (const k of keys) {
      if (!Object.prototype.hasOwnProperty.call(yo, k)) return false;
      pending.push([xo[k], yo[k]]);
    }
  }
  return true;
}

/** Values nested deeper than this are printed without indentation by {@link prettyJson}. */
export const PRETTY_MAX_DEPTH = 64;

/** True when objects/arrays in `value` nest more than `levels` deep (`value` itself is level 1). Stops early. */
export function nestedDeeperThan(value: unknown, levels: number): boolean {
  const pending: [unknown, number][] = [[value, 1]];
  while (pending.length > 0) {
    const [v, d] = pending.pop()!;
    if (typeof v !== 'object' || v === null) continue;
    if (d > levels) return true;
    for (const item of Array.isArray(v) ? v : Object.values(v)) {
      if (typeof item === 'object' && item !== null) pending.push([item, d + 1]);
    }
  }
  return false;
}

/**
 * `JSON.stringify(value, null, 2)`, except that a value nested deeper than {@link PRETTY_MAX_DEPTH}
 * levels (only data from before the record limits can be) comes out on one line: indentation grows
 * with the square of the depth, and 10,000 levels would print hundreds of megabytes of spaces.
 */
export function prettyJson(value: unknown): string {
  return stringifyJson(value, nestedDeeperThan(value, PRETTY_MAX_DEPTH) ? undefined : 2);
}
