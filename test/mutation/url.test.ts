// The promises of src/store/url.ts, as exact outputs: no password of a store URL survives redaction in
// any form it can be written in, nothing else in the URL changes, and store URLs parse to the file or
// connection they name (relative paths against the given directory).
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEFAULT_STORE_URL, parseStoreUrl, redactSecrets, redactUrl, secretsOf } from '../../src/store/url.js';

describe('redactUrl, exactly', () => {
  it.each([
    ['postgres://u:pw@h/db', 'postgres://u:***@h/db'],
    ['postgresql://u:p@w@h:5432/db', 'postgresql://u:***@h:5432/db'],
    ['POSTGRES://u:pw@h/db', 'POSTGRES://u:***@h/db'],
    ['postgres+ssl.x-1://u:pw@h/db', 'postgres+ssl.x-1://u:***@h/db'],
    ['postgres://u:p\nw@h/db', 'postgres://u:***@h/db'],
    ['postgres://u:a:b@h/db', 'postgres://u:***@h/db'],
    ['postgres://u@h/db', 'postgres://u@h/db'],
    ['postgres://h/db', 'postgres://h/db'],
    ['postgres://h/db?a=1&password=x&b=2', 'postgres://h/db?a=1&password=***&b=2'],
    ['postgres://h/db?password=x#frag', 'postgres://h/db?password=***#frag'],
    ['postgres://h/db#x?password=y', 'postgres://h/db#x?password=***'],
    ['postgres://h/db?password', 'postgres://h/db?password=***'],
    ['postgres://h/db?PWD=x&pass=y&sslpassword=z', 'postgres://h/db?PWD=***&pass=***&sslpassword=***'],
    ['postgres://h/db?%20password%20=x', 'postgres://h/db?%20password%20=***'],
    ['postgres://h/db?passwords=x&mypass=y&password_x=z', 'postgres://h/db?passwords=x&mypass=y&password_x=z'],
    ['postgres://h/db?%E0%A4%A=x&password=y', 'postgres://h/db?%E0%A4%A=x&password=***'],
    ['postgres://u:pw@h/db?password=q&x=1#f', 'postgres://u:***@h/db?password=***&x=1#f'],
    ['host=db password=secret dbname=x', 'host=db password=*** dbname=x'],
    ['host=db PASSWORD = secret dbname=x', 'host=db PASSWORD = *** dbname=x'],
    ["host=db password='a\\'b c' dbname=x", 'host=db password=*** dbname=x'],
    ['sslpassword=s password=t', 'sslpassword=*** password=***'],
    ['mypassword=s', 'mypassword=s'],
    ['sqlite:/data/memory.db', 'sqlite:/data/memory.db'],
    // A key=value string that mentions a URL further on is still a key=value string.
    ['host=db password=secret sslrootcert=file://x', 'host=db password=*** sslrootcert=file://x'],
    // No user part: a port is no password.
    ['postgres://h:5432/db', 'postgres://h:5432/db'],
    ['postgres://password', 'postgres://password'],
    ['postgres://?password=x', 'postgres://?password=***'],
  ])('%s', (url, expected) => {
    expect(redactUrl(url)).toBe(expected);
  });
});

describe('secretsOf, exactly', () => {
  it.each([
    ['postgres://u:p%40ss@h/db', ['p%40ss', 'p@ss']],
    ['postgres://u@h/db?password=a%20b&sslpassword=c', ['a%20b', 'c', 'a b']],
    ['postgres://h/db?password=x#y', ['x']],
    ['postgres://h/db?a=1#password=x', ['x']],
    ['postgres://u:@h/db', []],
    ['postgres://u@h/db', []],
    ['postgres://h/db?password', []],
    ['postgres://h/db?pass%77ord=z&PWD=w&%20pass%20=v&passwords=no', ['z', 'w', 'v']],
    ['postgres://h/db?%E0%A4%A=x', []],
    ['postgres://u:p\nw@h/db', ['p\nw']],
    ['POSTGRES://u:pw@h/db', ['pw']],
    ['postgres://u:%E0%A4%A@h/db', ['%E0%A4%A']],
    ["host=db password='kv pw' sslpassword=x PASSWORD = y password=", ['kv pw', 'x', 'y']],
    ['host=db password=abc9 sslpassword=def', ['abc9', 'def']],
    ['host=db password=secret sslrootcert=file://x', ['secret']],
    ['postgres://h:5432/db', []],
    ['postgres://:pw@h/db', ['pw']],
    ['postgres://password=x', []],
    ['postgres://?password=x', ['x']],
    ['postgres://h/db?passwordX', []],
    ["password='it\\'s'", ["it\\'s"]],
    ['mypassword=s', []],
    ['sqlite:/x.db', []],
  ])('%s', (url, expected) => {
    expect(secretsOf(url)).toEqual(expected);
  });
});

describe('redactSecrets', () => {
  it('replaces the longest secrets first, so a secret inside another leaves nothing of either', () => {
    expect(redactSecrets('said abc and ab', 'postgres://u:ab@h/db?password=abc')).toBe('said *** and ***');
    expect(redactSecrets('said abc and ab', 'postgres://u:abc@h/db?password=ab')).toBe('said *** and ***');
  });

  it('redacts every store URL in the text, with or without the configured one', () => {
    expect(redactSecrets('see postgresql://u:pw@h/db and POSTGRES://x:y@z, "postgres://a:b@c/d" <postgres://e:f@g>')).toBe(
      'see postgresql://u:***@h/db and POSTGRES://x:***@z, "postgres://a:***@c/d" <postgres://e:***@g>',
    );
    expect(redactSecrets("x 'postgres://a:b@c' y", '')).toBe("x 'postgres://a:***@c' y");
    expect(redactSecrets('password rejected: hunter2', 'postgres://u:hunter2@h/db')).toBe('password rejected: ***');
    expect(redactSecrets('nothing here')).toBe('nothing here');
  });
});

describe('parseStoreUrl', () => {
  it('PostgreSQL URLs keep their connection string and show without the password', () => {
    expect(parseStoreUrl('postgres://u:pw@h/db')).toEqual({ kind: 'postgres', connectionString: 'postgres://u:pw@h/db', display: 'postgres://u:***@h/db' });
    expect(parseStoreUrl('postgresql://u:pw@h/db')).toEqual({ kind: 'postgres', connectionString: 'postgresql://u:pw@h/db', display: 'postgresql://u:***@h/db' });
  });

  it('file URLs resolve against the given directory, or the process directory', () => {
    expect(parseStoreUrl('sqlite:rel/x.db', '/base')).toEqual({ kind: 'sqlite', file: '/base/rel/x.db', display: 'sqlite:/base/rel/x.db' });
    expect(parseStoreUrl('json:/abs/m.json', '/base')).toEqual({ kind: 'json', file: '/abs/m.json', display: 'json:/abs/m.json' });
    expect(parseStoreUrl('json:m.json')).toMatchObject({ file: path.resolve(process.cwd(), 'm.json') });
    expect(parseStoreUrl(DEFAULT_STORE_URL, '/base')).toEqual({ kind: 'sqlite', file: '/base/data/storage/memory.db', display: 'sqlite:/base/data/storage/memory.db' });
  });

  it('refuses anything else with E_STORE_URL, the URL shown without its password', () => {
    const refused = (url: string) => {
      try {
        parseStoreUrl(url, '/base');
      } catch (err) {
        return err;
      }
      throw new Error(`${url} was accepted`);
    };
    for (const url of ['sqlite:', 'json:', 'xsqlite:a', 'sqlite:a\nb', 'postgres:/h/db', 'mysql://u:pw@h/db', '', 'SQLITE:a']) {
      const err = refused(url);
      expect(err, url).toMatchObject({ code: 'E_STORE_URL' });
      expect((err as Error).message).toBe(`unknown store URL ${JSON.stringify(redactUrl(url))}: use sqlite:PATH, json:PATH or postgres://USER@HOST:PORT/DB`);
    }
    expect((refused('mysql://u:pw@h/db') as Error).message).toContain('"mysql://u:***@h/db"');
  });
});
