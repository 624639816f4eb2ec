import { describe, expect, it } from 'vitest';
import { redactSecrets, redactUrl, secretsOf } from '../../src/store/url.js';

/** Every form a PostgreSQL password can take in a store URL, with the secret parts that must vanish. */
const FORMS: [url: string, secrets: string[], keeps: string[]][] = [
  ['postgres://chatmem:Hunter2pw@db.internal:5432/chatmem', ['Hunter2pw'], ['chatmem:***@db.internal:5432/chatmem']],
  ['postgresql://chatmem:Hunter2pw@db/chatmem', ['Hunter2pw'], ['postgresql://chatmem:***@db/chatmem']],
  ['postgres://chatmem:p@ss@w0rd@db/chatmem', ['p@ss@w0rd', 'ss@w0rd', 'w0rd'], ['chatmem:***@db/chatmem']],
  ['postgres://chatmem:p%40ss%3Aw%2Fd@db/chatmem', ['p%40ss%3Aw%2Fd', 'p@ss:w/d', 'ss%3A'], ['chatmem:***@db/chatmem']],
  ['postgres://chatmem:pw:with:colons@db/chatmem', ['pw:with:colons', 'with:colons'], ['chatmem:***@db']],
  ['postgres://:OnlyPw99@db/chatmem', ['OnlyPw99'], [':***@db/chatmem']],
  ['postgres://chatmem@db/chatmem?password=QueryPw77&application_name=x', ['QueryPw77'], ['?password=***&application_name=x']],
  ['postgres://chatmem@db/chatmem?sslmode=require&PASSWORD=QueryPw77', ['QueryPw77'], ['PASSWORD=***']],
  ['postgres://chatmem@db/chatmem?pass%77ord=EncKeyPw', ['EncKeyPw'], ['pass%77ord=***']],
  ['postgres://chatmem@db/chatmem?sslpassword=KeyPass1#x', ['KeyPass1'], ['sslpassword=***#x']],
  ['postgres://chatmem:Pw1@db/chatmem?password=Pw2', ['Pw1', 'Pw2'], ['chatmem:***@db/chatmem?password=***']],
  ['postgres://u:SecretAt@db/x?options=-c%20a@b', ['SecretAt'], ['u:***@b']],
  ['host=db user=chatmem password=KvPw123 dbname=chatmem', ['KvPw123'], ['password=*** dbname=chatmem']],
  ["host=db password='kv pw 9' dbname=chatmem", ['kv pw 9'], ["password=*** dbname"]],
];

describe('redactUrl', () => {
  it.each(FORMS)('%s', (url, secrets, keeps) => {
    const r = redactUrl(url);
    for (const s of secrets) expect(r).not.toContain(s);
    for (const k of keeps) expect(r).toContain(k);
    // Idempotent: a redacted URL redacts to itself.
    expect(redactUrl(r)).toBe(r);
  });

  it('leaves URLs without a password alone', () => {
    for (const u of ['postgres://chatmem@db:5432/chatmem', 'postgres://db/chatmem?sslmode=require', 'sqlite:/data/memory.db', 'json:/x@y/memory.json']) {
      expect(redactUrl(u)).toBe(u);
    }
  });

  it('finds the secrets of each form, decoded too, for scrubbing messages', () => {
    expect(secretsOf('postgres://u:p%40ss@h/db')).toEqual(expect.arrayContaining(['p%40ss', 'p@ss']));
    expect(secretsOf('postgres://u@h/db?password=a%20b')).toEqual(expect.arrayContaining(['a%20b', 'a b']));
    expect(secretsOf('postgres://u@h/db')).toEqual([]);
  });

  it('scrubs passwords from error text, whether quoted alone or inside a URL', () => {
    const url = 'postgres://chatmem:p%40ss@db/chatmem';
    const text = `getaddrinfo failed for ${url}; password "p@ss" rejected; raw p%40ss; other postgres://x:Other9@h/db`;
    const r = redactSecrets(text, url);
    for (const s of ['p@ss', 'p%40ss', 'Other9']) expect(r).not.toContain(s);
    expect(r).toContain('postgres://chatmem:***@db/chatmem');
  });
});
